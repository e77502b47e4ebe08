//! Decoding HID boot-keyboard reports into text, as a guest's keyboard driver
//! does: a key counts when it appears in a report (press), not while it stays
//! down, and shift is read from the modifier byte. US layout, the characters a
//! demo types; anything else is skipped.

/// Left or right shift in the modifier byte.
const SHIFT: u8 = 0x02 | 0x20;

/// The character of a usage id (HID usage table, keyboard page) on a US layout.
pub fn usage_char(usage: u8, shift: bool) -> Option<char> {
    let c = match usage {
        0x04..=0x1d => {
            let base = b'a' + (usage - 0x04);
            char::from(if shift {
                base.to_ascii_uppercase()
            } else {
                base
            })
        }
        0x1e..=0x26 if !shift => char::from(b'1' + (usage - 0x1e)),
        0x1e if shift => '!',
        0x27 if !shift => '0',
        0x28 => '\n',
        0x2b => '\t',
        0x2c => ' ',
        0x2d if !shift => '-',
        0x2e if !shift => '=',
        0x36 if !shift => ',',
        0x37 if !shift => '.',
        0x38 => {
            if shift {
                '?'
            } else {
                '/'
            }
        }
        _ => return None,
    };
    Some(c)
}

/// Turns a stream of 8-byte boot reports into typed characters.
#[derive(Debug, Default)]
pub struct BootDecoder {
    down: [u8; 6],
}

impl BootDecoder {
    /// The characters newly pressed in `report` (short reports are ignored).
    pub fn feed(&mut self, report: &[u8]) -> String {
        let (Some(&modifiers), Some(keys)) = (report.first(), report.get(2..8)) else {
            return String::new();
        };
        let shift = modifiers & SHIFT != 0;
        let mut out = String::new();
        for &k in keys {
            if k > 0x03 && !self.down.contains(&k) {
                out.extend(usage_char(k, shift));
            }
        }
        let mut down = [0u8; 6];
        down.copy_from_slice(keys);
        self.down = down;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn press_release_and_shift() {
        let mut d = BootDecoder::default();
        let mut text = String::new();
        for r in [
            [0x02, 0, 0x0b, 0, 0, 0, 0, 0], // H
            [0, 0, 0, 0, 0, 0, 0, 0],
            [0, 0, 0x08, 0, 0, 0, 0, 0], // e
            [0, 0, 0x08, 0, 0, 0, 0, 0], // still down: no repeat
            [0, 0, 0, 0, 0, 0, 0, 0],
            [0x02, 0, 0x1e, 0, 0, 0, 0, 0], // !
        ] {
            text.push_str(&d.feed(&r));
        }
        assert_eq!(text, "He!");
        assert_eq!(d.feed(&[1, 2]), "", "short report");
    }

    #[test]
    fn digits_and_punctuation() {
        let keys = [0x1e, 0x27, 0x2c, 0x37, 0x36, 0x38, 0x2d];
        let s: String = keys.iter().filter_map(|&k| usage_char(k, false)).collect();
        assert_eq!(s, "10 .,/-");
        assert_eq!(usage_char(0x38, true), Some('?'));
        assert_eq!(usage_char(0x99, false), None);
    }
}
