//! What [`confine`](crate::confine) did: one [`Step`] per step, in order, so the
//! worker can log one line and the monitor (or a test) can tell a partly confined
//! worker from a fully confined one.

use std::fmt;

/// The steps of one confinement, in the order they ran.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    steps: Vec<Step>,
}

/// One step and its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Its name: `namespaces`, `bounding set`, `user`, `capabilities`,
    /// `no_new_privs`, `landlock` or `seccomp`.
    pub name: &'static str,
    /// Applied or skipped.
    pub outcome: Outcome,
}

/// What became of a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// In force; the text says what exactly (may be empty).
    Applied(String),
    /// Not applied; the text says why.
    Skipped(String),
}

impl Report {
    /// The steps, in the order they ran.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// Whether every step was applied. A step skipped by request (e.g.
    /// [`UserChoice::Keep`](crate::UserChoice::Keep)) counts as not applied: the
    /// process is less confined than it could have been.
    pub fn fully_confined(&self) -> bool {
        !self.steps.is_empty()
            && self
                .steps
                .iter()
                .all(|s| matches!(s.outcome, Outcome::Applied(_)))
    }

    pub(crate) fn push(&mut self, name: &'static str, outcome: Outcome) {
        match &outcome {
            Outcome::Applied(what) => tracing::debug!("confinement: {name} {what}"),
            Outcome::Skipped(why) => tracing::debug!("confinement: {name} skipped: {why}"),
        }
        self.steps.push(Step { name, outcome });
    }
}

impl fmt::Display for Step {
    /// `name what` when applied, `name skipped: why` when not.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            Outcome::Applied(what) if what.is_empty() => f.write_str(self.name),
            Outcome::Applied(what) => write!(f, "{} {what}", self.name),
            Outcome::Skipped(why) => write!(f, "{} skipped: {why}", self.name),
        }
    }
}

impl fmt::Display for Report {
    /// The steps on one line, `; ` between them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, step) in self.steps.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{step}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(steps: &[(&'static str, Outcome)]) -> Report {
        let mut r = Report::default();
        for (name, outcome) in steps {
            r.push(name, outcome.clone());
        }
        r
    }

    #[test]
    fn one_line_in_step_order() {
        let applied = |s: &str| Outcome::Applied(s.to_owned());
        let r = report(&[
            ("user", applied("nobody (65534:65534)")),
            ("capabilities", applied("dropped")),
            ("no_new_privs", applied("")),
            ("namespaces", applied("mnt,net,ipc")),
            ("landlock", applied("ABI 4 (fs denied)")),
            ("seccomp", applied("(71 syscalls)")),
        ]);
        assert_eq!(
            r.to_string(),
            "user nobody (65534:65534); capabilities dropped; no_new_privs; \
             namespaces mnt,net,ipc; landlock ABI 4 (fs denied); seccomp (71 syscalls)"
        );
        assert!(r.fully_confined());
        assert_eq!(r.steps().len(), 6);
        assert_eq!(r.steps()[1].name, "capabilities");
    }

    #[test]
    fn a_skipped_step_says_why_and_spoils_full_confinement() {
        let r = report(&[
            ("no_new_privs", Outcome::Applied(String::new())),
            ("landlock", Outcome::Skipped("kernel lacks it".into())),
        ]);
        assert_eq!(
            r.to_string(),
            "no_new_privs; landlock skipped: kernel lacks it"
        );
        assert!(!r.fully_confined());
        assert!(!Report::default().fully_confined());
        assert_eq!(Report::default().to_string(), "");
    }
}
