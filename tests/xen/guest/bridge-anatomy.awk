# Per-request phases of the vhci bridge, from its trace log (RUST_LOG pvusb_frontend::vhci=trace):
#   kernel   RET_SUBMIT written -> the next CMD_SUBMIT submitted (vhci, the driver, the reader)
#   usbif    CMD_SUBMIT submitted -> last usbif completion (ring, backend, device; all pieces)
#   answer   last usbif completion -> RET_SUBMIT written (encode, send)
# Prints the median and the mean of each, in ms: the mean alone is pulled up by the pauses
# between a test's commands.
function t(s,   a) { split(substr(s, 12, 15), a, ":"); return a[1] * 3600 + a[2] * 60 + a[3] }
function seq(   q) { match($0, /seqnum=[0-9]+/); return substr($0, RSTART + 7, RLENGTH - 7) }
function qsort(A, lo, hi,   i, last, tmp) {
    if (lo >= hi) return
    last = lo
    for (i = lo + 1; i <= hi; i++) if (A[i] < A[lo]) { last++; tmp = A[last]; A[last] = A[i]; A[i] = tmp }
    tmp = A[lo]; A[lo] = A[last]; A[last] = tmp
    qsort(A, lo, last - 1); qsort(A, last + 1, hi)
}
function stat(A, n,   i, s) {
    if (n == 0) return "-"
    for (i = 1; i <= n; i++) s += A[i]
    qsort(A, 1, n)
    return sprintf("median %.2f mean %.2f", 1000 * A[int((n + 1) / 2)], 1000 * s / n)
}
/CMD_SUBMIT submitted/ { q = seq(); ts = t($1); if (q in sub_t) next  # a split request logs one per piece
    sub_t[q] = ts
    if (last_ret) { K[++nk] = ts - last_ret; last_ret = 0 } }
/usbif completion/ { q = seq(); if (q in sub_t) { done_t[q] = t($1); np++ } }
/RET_SUBMIT written/ { q = seq(); ts = t($1); last_ret = ts
    if (q in done_t) { U[++n] = done_t[q] - sub_t[q]; A[n] = ts - done_t[q]; delete sub_t[q]; delete done_t[q] } }
END { printf "requests %d (usbif URBs %d), ms: kernel %s; usbif %s; answer %s\n", n, np, stat(K, nk), stat(U, n), stat(A, n) }
