//! FHIR ids for slots and doctors.
//!
//! A FHIR id is 1–64 characters of `A–Z a–z 0–9 - .`; the service's ids
//! also allow `_`. A slot's or doctor's FHIR id is its own id with `.`
//! written `..` and `_` written `.-`, so that ids without either (`D1-09`,
//! `D1`) read the same in both, and every FHIR id names at most one slot
//! or doctor. An id whose escaped form is longer than 64 characters has
//! no FHIR id (docs/fhir.md says so); token ids are UUIDs and need no
//! escaping.

use crate::engine::ID_MAX_LEN;

/// The FHIR id of a slot or doctor id; `None` when the escaped form is
/// longer than a FHIR id may be.
pub fn encode(id: &str) -> Option<String> {
    let mut encoded = String::with_capacity(id.len());
    for character in id.chars() {
        match character {
            '.' => encoded.push_str(".."),
            '_' => encoded.push_str(".-"),
            other => encoded.push(other),
        }
    }
    (encoded.len() <= ID_MAX_LEN).then_some(encoded)
}

/// The slot or doctor id a FHIR id stands for; `None` when `fhir_id` is
/// not the FHIR id of any (a lone `.`, a character FHIR ids do not have).
pub fn decode(fhir_id: &str) -> Option<String> {
    if fhir_id.is_empty() || fhir_id.len() > ID_MAX_LEN {
        return None;
    }
    let mut decoded = String::with_capacity(fhir_id.len());
    let mut characters = fhir_id.chars();
    while let Some(character) = characters.next() {
        match character {
            '.' => match characters.next() {
                Some('.') => decoded.push('.'),
                Some('-') => decoded.push('_'),
                _ => return None,
            },
            other if other.is_ascii_alphanumeric() || other == '-' => decoded.push(other),
            _ => return None,
        }
    }
    Some(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_without_dots_or_underscores_are_their_own_fhir_ids() {
        for id in ["D1-09", "D1", "DR-2030-01-02-09", "a"] {
            assert_eq!(encode(id).as_deref(), Some(id));
            assert_eq!(decode(id).as_deref(), Some(id));
        }
    }

    #[test]
    fn dots_and_underscores_are_escaped_and_come_back() {
        for (id, fhir) in [
            ("Dr.Rao", "Dr..Rao"),
            ("D_1", "D.-1"),
            ("._", "...-"),
            ("_.", ".-.."),
            ("a..b", "a....b"),
        ] {
            assert_eq!(encode(id).as_deref(), Some(fhir), "{id}");
            assert_eq!(decode(fhir).as_deref(), Some(id), "{fhir}");
        }
    }

    #[test]
    fn an_id_too_long_once_escaped_has_no_fhir_id() {
        let long = "a".repeat(63) + "_";
        assert_eq!(encode(&long), None);
        let fits = "a".repeat(62) + "_";
        assert_eq!(
            decode(&encode(&fits).unwrap()).as_deref(),
            Some(fits.as_str())
        );
    }

    #[test]
    fn strings_that_no_id_encodes_to_are_refused() {
        for fhir in ["", ".", "a.", ".x", "a_b", "a/b", "é", &"a".repeat(65)] {
            assert_eq!(decode(fhir), None, "{fhir:?}");
        }
    }
}
