//! A leaf used by several phases: the folded form under which two spellings of a name or an identity count as the
//! same (authentication folds subjects, classification folds model names and aliases for the policy), and the
//! characters a stored name may not contain.
//!
//! Folding is NFKC + full case folding + removal of default-ignorable code points (an approximation of Unicode's
//! `NFKC_Casefold`): `Fraud-Detector`, `ｆｒａｕｄ-detector` (fullwidth) and `fraud\u{200B}-detector` (a zero-width
//! space) all fold to `fraud-detector`. The mapping is UTS 46's (itself derived from `NFKC_Casefold`), with its two
//! deviations folded as case folding does (`ß` -> `ss`, final `ς` -> `σ`); a character UTS 46 disallows is
//! lower-cased instead.

use icu_normalizer::uts46::Uts46MapperBorrowed;
use icu_normalizer::ComposingNormalizerBorrowed;
use icu_properties::props::DefaultIgnorableCodePoint;
use icu_properties::CodePointSetData;

/// The folded form of `s`.
pub fn fold(s: &str) -> String {
    // The common case: lower-case ASCII without controls is its own fold.
    if s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.' | b' ')) {
        return s.to_string();
    }
    let ignorable = CodePointSetData::new::<DefaultIgnorableCodePoint>();
    let mapper = Uts46MapperBorrowed::new();
    let mut mapped = String::with_capacity(s.len());
    let mut one = [0u8; 4];
    for c in s.chars().filter(|c| !ignorable.contains(*c)) {
        match c {
            'ß' | 'ẞ' => mapped.push_str("ss"),
            'ς' => mapped.push('σ'),
            _ => {
                let before = mapped.len();
                mapped.extend(mapper.map_normalize(c.encode_utf8(&mut one).chars()));
                if c != '\u{FFFD}' && mapped.get(before..) == Some("\u{FFFD}") {
                    mapped.truncate(before);
                    mapped.extend(c.to_lowercase());
                }
            }
        }
    }
    ComposingNormalizerBorrowed::new_nfkc().normalize(&mapped).into_owned()
}

/// Why `s` cannot be a name MLflow stores (a registered model, an alias): a control character anywhere, or white
/// space (or an invisible default-ignorable character) at either end. `None` when it can.
pub fn name_problem(s: &str) -> Option<&'static str> {
    let ignorable = CodePointSetData::new::<DefaultIgnorableCodePoint>();
    let blank = |c: char| c.is_whitespace() || ignorable.contains(c);
    if s.chars().any(char::is_control) {
        Some("contains a control character")
    } else if s.starts_with(blank) || s.ends_with(blank) {
        Some("starts or ends with white space or an invisible character")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn look_alikes_fold_to_one_name() {
        for s in [
            "fraud-detector",
            "Fraud-Detector",
            "FRAUD-DETECTOR",
            "ｆｒａｕｄ－ｄｅｔｅｃｔｏｒ",
            "fraud\u{200B}-detector",
            "fraud-\u{00AD}detector",
            "fra\u{200D}ud-detector",
            "\u{FEFF}fraud-detector",
            "fraud-detector\u{FE0F}",
        ] {
            assert_eq!(fold(s), "fraud-detector", "{s:?}");
        }
        assert_eq!(fold("Champion"), "champion");
        assert_eq!(fold("ＣＨＡＭＰＩＯＮ"), "champion");
        assert_eq!(fold("Straße"), "strasse");
        assert_eq!(fold("ΣΊΣΥΦΟΣ"), fold("σίσυφος"));
        assert_eq!(fold("ﬁne"), "fine");
        assert_eq!(fold("Alice"), "alice");
        assert_eq!(fold("e\u{301}"), "\u{e9}");
    }

    #[test]
    fn different_names_stay_different() {
        assert_ne!(fold("champion"), fold("champions"));
        assert_ne!(fold("a\u{1}"), fold("a\u{2}"));
        assert_ne!(fold("model-1"), fold("model-l"));
        assert_eq!(fold("\u{E000}x"), "\u{E000}x");
    }

    #[test]
    fn control_characters_and_outer_blanks_are_problems() {
        for bad in [
            "champion\n",
            "\tchampion",
            "cham\u{0}pion",
            " champion",
            "champion ",
            "champion\u{2028}",
            "champion\u{200B}",
            "\u{FEFF}champion",
            "champion\u{85}",
            "cham\u{7F}pion",
        ] {
            assert!(name_problem(bad).is_some(), "{bad:?}");
        }
        for good in ["champion", "fraud detector", "Fraud-Detector", "модель", "prompt/v1", "ｆｕｌｌ"] {
            assert_eq!(name_problem(good), None, "{good:?}");
        }
    }
}
