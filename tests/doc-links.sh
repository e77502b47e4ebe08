#!/usr/bin/env bash
# Checks the documentation: every relative link in README.md, docs/**/*.md and
# tests/xen/README.md must name a file or directory inside the repository, and
# README.md must stay within 8192 bytes. Links inside code (fenced blocks and
# `inline code`) are not links and are skipped, as are URLs and in-page anchors;
# a link's own #anchor is not checked, only its path.
# Needs bash, coreutils, grep and sed. Exit status 1 with one line per problem.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd -P)

README_MAX=8192
problems=0
problem() {
    echo "doc-links: $*" >&2
    problems=$((problems + 1))
}

size=$(wc -c <README.md)
if ((size > README_MAX)); then
    problem "README.md is $size bytes, more than $README_MAX"
fi

files=(README.md tests/xen/README.md)
while IFS= read -r -d '' f; do
    files+=("$f")
done < <(find docs -name '*.md' -print0 | sort -z)

# Prints "LINE<TAB>TARGET" for every link of a markdown file: inline links
# [text](target) and reference definitions "[label]: target". Code is blanked
# first (keeping line numbers), so `a[i](x)` in code is not taken for a link.
link_targets() {
    sed -e '/^[[:space:]]*```/,/^[[:space:]]*```/s/.*//' -e 's/`[^`]*`//g' "$1" |
        {
            grep -n -o -e '\]([^)]*)' -e '^[[:space:]]*\[[^]]*\]:[[:space:]]*[^[:space:]]*' || true
        } |
        sed -E -e 's/^([0-9]+):\]\(/\1\t/' -e 's/\)$//' \
            -e 's/^([0-9]+):[[:space:]]*\[[^]]*\]:[[:space:]]*/\1\t/'
}

checked=0
for f in "${files[@]}"; do
    dir=$(dirname "$f")
    while IFS=$'\t' read -r line target; do
        target=${target%% \"*}      # [text](path "title")
        target=${target#<}
        target=${target%>}
        case $target in
            '' | '#'*) continue ;;                   # in-page anchor
            [a-zA-Z]*:*) continue ;;                 # http:, https:, mailto:, ...
        esac
        path=${target%%#*}
        [[ -n $path ]] || continue
        if [[ $path == /* ]]; then
            resolved=$root$path
        else
            resolved=$dir/$path
        fi
        checked=$((checked + 1))
        full=$(realpath -m -- "$resolved")
        if [[ $full != "$root" && $full != "$root"/* ]]; then
            problem "$f:$line: '$target' points outside the repository"
        elif [[ ! -e $resolved ]]; then
            problem "$f:$line: '$target' does not exist"
        fi
    done < <(link_targets "$f")
done

if ((problems > 0)); then
    echo "doc-links: $problems problem(s) in ${#files[@]} files" >&2
    exit 1
fi
echo "doc-links: ${#files[@]} files, $checked relative links, README.md $size bytes: ok"
