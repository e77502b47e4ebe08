//! Showing an error with its causes.
//!
//! pvusb's error messages do not repeat their `#[source]` (the chain would print it
//! twice), so a message alone says what failed and [`Chain`] adds why: every place
//! that shows an error to a person (the command line's last words, a log line)
//! shows it through [`Chain`].

use std::error::Error;
use std::fmt;

/// Displays an error followed by each of its sources, `": "` between them:
/// `cannot map the urb ring page (grant 8) of domain 3: gntdev map failed: Bad address`.
#[derive(Debug, Clone, Copy)]
pub struct Chain<'a>(pub &'a (dyn Error + 'a));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("outer")
        }
    }

    impl Error for Outer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn shows_every_source_once() {
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(Chain(&e).to_string(), "outer: inner");
        assert_eq!(Chain(&std::io::Error::other("alone")).to_string(), "alone");
    }
}
