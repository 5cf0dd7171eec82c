//! Reading and validating requests by hand, so that every failure gets the
//! status the contract orders (413, path 400, 415, body 400, 422) and the
//! server never panics on input.

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use bytes::Bytes;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::error::{ApiError, FieldError};
use crate::engine::{Capacity, DoctorId, PatientId, SlotId, Source, CAPACITY_MAX, ID_MAX_LEN};
use crate::service::Fingerprint;

/// The longest accepted `Idempotency-Key`.
pub const IDEMPOTENCY_KEY_MAX_LEN: usize = 128;

/// Reads the whole body, refusing more than `limit_bytes` with 413 before
/// any other check.
pub async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit_bytes: usize,
) -> Result<Bytes, ApiError> {
    let too_large = ApiError::PayloadTooLarge { limit_bytes };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit_bytes as u64) {
        return Err(too_large);
    }
    axum::body::to_bytes(body, limit_bytes)
        .await
        .map_err(|error| {
            // Only the limit can fail here once headers were read, apart from
            // a client that breaks the connection, whose answer nobody reads.
            let source = std::error::Error::source(&error);
            if source.is_some_and(|source| source.is::<http_body_util::LengthLimitError>()) {
                too_large
            } else {
                ApiError::Malformed(format!("the request body could not be read: {error}"))
            }
        })
}

/// 415 unless the request declares a JSON body.
fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"));
    if is_json {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType)
    }
}

/// A JSON object body, checked in the contract's order: size (413),
/// content type (415), then syntax (400).
pub async fn json_body(
    headers: &HeaderMap,
    body: Body,
    limit_bytes: usize,
) -> Result<Map<String, Value>, ApiError> {
    json_object(&json_bytes(headers, body, limit_bytes).await?)
}

/// The bytes of a body declared as JSON, checked for size (413), then
/// content type (415); their syntax is for the caller to check.
pub async fn json_bytes(
    headers: &HeaderMap,
    body: Body,
    limit_bytes: usize,
) -> Result<Bytes, ApiError> {
    let bytes = read_body(headers, body, limit_bytes).await?;
    require_json(headers)?;
    Ok(bytes)
}

/// The fields of a booking body, when it is a plain JSON object (see
/// [`is_plain`]) whose `patientId`, `slotId` and `source` are valid
/// strings; other fields are ignored, as the thorough reading ignores them.
/// `None` for anything else, including a body that is not JSON at all: the
/// thorough reading then finds and reports the problems.
pub fn quick_booking(bytes: &[u8]) -> Option<(PatientId, SlotId, Source)> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Booking<'a> {
        patient_id: &'a str,
        slot_id: &'a str,
        source: &'a str,
    }
    if !is_plain(bytes) {
        return None;
    }
    let booking: Booking = serde_json::from_slice(bytes).ok()?;
    Some((
        PatientId::parse(booking.patient_id)?,
        SlotId::parse(booking.slot_id)?,
        Source::parse(booking.source)?,
    ))
}

/// Whether a body has only what the quick reading checks as thoroughly as
/// the full one: ASCII (serde_json skips an ignored string without checking
/// its UTF-8), no backslash (nor its escapes, such as a lone surrogate),
/// and outside strings only one object's punctuation, white space and
/// letters (`true`, `false`, `null`). So no number (an ignored number's
/// range is not checked) and no nesting (an ignored value's depth is not
/// limited). It looks at each byte once and allocates nothing.
fn is_plain(bytes: &[u8]) -> bool {
    let mut in_string = false;
    let mut objects = 0;
    for &byte in bytes {
        if in_string {
            match byte {
                b'"' => in_string = false,
                b'\\' | 0x80.. => return false,
                _ => {}
            }
        } else {
            match byte {
                b'"' => in_string = true,
                b'{' if objects == 0 => objects += 1,
                b'}' | b':' | b',' | b' ' | b'\t' | b'\n' | b'\r' => {}
                byte if byte.is_ascii_alphabetic() => {}
                _ => return false,
            }
        }
    }
    true
}

/// 400 unless the body is a JSON object.
pub fn json_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(ApiError::Malformed(
            "the request body must be a JSON object".into(),
        )),
        Err(error) => Err(ApiError::Malformed(format!(
            "the request body is not valid JSON: {error}"
        ))),
    }
}

/// The one parameter of a path, read without rejecting: a segment that is
/// not valid UTF-8 is `None` and is judged later, in the contract's error
/// order (after the body size, for instance).
pub struct PathParam(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<PathParam, Infallible> {
        let segment = Path::<String>::from_request_parts(parts, state).await;
        Ok(PathParam(segment.ok().map(|Path(segment)| segment)))
    }
}

impl PathParam {
    /// 400 unless the segment is a token id.
    pub fn token_id(&self) -> Result<Uuid, ApiError> {
        match &self.0 {
            Some(raw) => token_id(raw),
            None => Err(ApiError::Malformed(
                "the token id in the path is not a UUID".into(),
            )),
        }
    }

    /// A doctor id that is not even well formed names no doctor: 404.
    pub fn doctor_id(&self) -> Result<DoctorId, ApiError> {
        let raw = self.0.as_deref().unwrap_or("(not UTF-8)");
        DoctorId::parse(raw).ok_or_else(|| ApiError::MalformedDoctorId(raw.to_owned()))
    }

    /// A slot id that is not even well formed names no slot: 404.
    pub fn slot_id(&self) -> Result<SlotId, ApiError> {
        let raw = self.0.as_deref().unwrap_or("(not UTF-8)");
        SlotId::parse(raw).ok_or_else(|| ApiError::MalformedSlotId(raw.to_owned()))
    }
}

/// Token ids in paths are canonical (hyphenated) UUIDs in any letter case.
pub fn token_id(raw: &str) -> Result<Uuid, ApiError> {
    let malformed = || ApiError::Malformed(format!("token id {raw:?} is not a UUID"));
    if raw.len() != 36 {
        return Err(malformed());
    }
    Uuid::try_parse(raw).map_err(|_| malformed())
}

/// The SHA-256 digest of a request's canonical form: what an idempotency
/// key remembers of the request it was first used with.
pub fn fingerprint(value: &Value) -> Fingerprint {
    Sha256::digest(canonical(value)).into()
}

/// The canonical text of a JSON value: object keys sorted at every level,
/// no insignificant white space. Two bodies are "the same request" when
/// their canonical texts are equal.
fn canonical(value: &Value) -> String {
    fn write(value: &Value, out: &mut String) {
        match value {
            Value::Object(object) => {
                let mut entries: Vec<_> = object.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                out.push('{');
                for (index, (key, value)) in entries.into_iter().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(key.clone()).to_string());
                    out.push(':');
                    write(value, out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (index, item) in items.iter().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let mut out = String::new();
    write(value, &mut out);
    out
}

/// The header of an idempotent booking.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The `Idempotency-Key` header: 1–128 visible ASCII characters.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, FieldError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let bytes = value.as_bytes();
    let visible = bytes.iter().all(|byte| (0x21..=0x7e).contains(byte));
    if bytes.is_empty() || bytes.len() > IDEMPOTENCY_KEY_MAX_LEN || !visible {
        return Err(FieldError::new(
            "Idempotency-Key",
            format!("must be 1–{IDEMPOTENCY_KEY_MAX_LEN} visible ASCII characters"),
        ));
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// Collects every field error of one body, so the client sees them all.
pub struct Fields<'a> {
    object: &'a Map<String, Value>,
    errors: Vec<FieldError>,
}

impl<'a> Fields<'a> {
    pub fn new(object: &'a Map<String, Value>) -> Fields<'a> {
        Fields {
            object,
            errors: Vec::new(),
        }
    }

    pub fn error(&mut self, error: FieldError) {
        self.errors.push(error);
    }

    fn fail<T>(&mut self, field: &str, message: impl Into<String>) -> Option<T> {
        self.errors.push(FieldError::new(field, message));
        None
    }

    /// A required string field.
    fn string(&mut self, field: &str) -> Option<&'a str> {
        match self.object.get(field) {
            None | Some(Value::Null) => self.fail(field, "is required"),
            Some(Value::String(text)) => Some(text),
            Some(_) => self.fail(field, "must be a string"),
        }
    }

    /// A required identifier, parsed by `parse` (1–64 of `A–Z a–z 0–9 . _ -`).
    pub fn id<T>(&mut self, field: &str, parse: fn(&str) -> Option<T>) -> Option<T> {
        let raw = self.string(field)?;
        parse(raw).or_else(|| {
            self.fail(
                field,
                format!("must be 1–{ID_MAX_LEN} characters of A–Z, a–z, 0–9, '.', '_' or '-'"),
            )
        })
    }

    pub fn source(&mut self, field: &str) -> Option<Source> {
        let raw = self.string(field)?;
        Source::parse(raw).or_else(|| {
            let names: Vec<_> = Source::ALL.iter().map(|s| s.as_str()).collect();
            self.fail(field, format!("must be one of {}", names.join(", ")))
        })
    }

    /// A JSON integer from 0 to the capacity limit; `1.0`, `true` and `"3"`
    /// are refused.
    pub fn capacity(&mut self, field: &str) -> Option<Capacity> {
        let message = format!("must be an integer from 0 to {CAPACITY_MAX}");
        match self.object.get(field) {
            None | Some(Value::Null) => self.fail(field, "is required"),
            Some(Value::Number(number)) => number
                .as_u64()
                .and_then(|seats| u32::try_from(seats).ok())
                .and_then(Capacity::new)
                .or_else(|| self.fail(field, message)),
            Some(_) => self.fail(field, message),
        }
    }

    /// A required `HH:MM` time, 00:00 to 23:59.
    pub fn time(&mut self, field: &str) -> Option<jiff::civil::Time> {
        let raw = self.string(field)?;
        parse_time(raw).or_else(|| self.fail(field, "must be a time HH:MM from 00:00 to 23:59"))
    }

    /// An optional `YYYY-MM-DD` date; absent or null gives `None`.
    pub fn optional_date(&mut self, field: &str) -> Option<Option<jiff::civil::Date>> {
        match self.object.get(field) {
            None | Some(Value::Null) => Some(None),
            Some(Value::String(raw)) => match parse_date(raw) {
                Some(date) => Some(Some(date)),
                None => self.fail(field, "must be a date YYYY-MM-DD"),
            },
            Some(_) => self.fail(field, "must be a date YYYY-MM-DD"),
        }
    }

    /// 422 with every collected error, if any.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self.errors))
        }
    }
}

/// Strict `HH:MM`.
pub fn parse_time(raw: &str) -> Option<jiff::civil::Time> {
    let bytes = raw.as_bytes();
    if bytes.len() != 5 || bytes[2] != b':' {
        return None;
    }
    let hour: i8 = digits(&raw[..2])?;
    let minute: i8 = digits(&raw[3..])?;
    jiff::civil::Time::new(hour, minute, 0, 0).ok()
}

/// Strict RFC 3339 full-date, `YYYY-MM-DD`.
pub fn parse_date(raw: &str) -> Option<jiff::civil::Date> {
    let bytes = raw.as_bytes();
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let year: i16 = digits(&raw[..4])?;
    let month: i8 = digits(&raw[5..7])?;
    let day: i8 = digits(&raw[8..])?;
    jiff::civil::Date::new(year, month, day).ok()
}

fn digits<T: std::str::FromStr>(raw: &str) -> Option<T> {
    raw.bytes()
        .all(|byte| byte.is_ascii_digit())
        .then(|| raw.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_dates_are_strict() {
        assert!(parse_time("09:00").is_some());
        assert!(parse_time("23:59").is_some());
        for bad in ["9:00", "24:00", "09:60", "09-00", "+9:00", "09:00:00", ""] {
            assert!(parse_time(bad).is_none(), "{bad}");
        }
        assert!(parse_date("2030-02-28").is_some());
        for bad in [
            "2030-02-30",
            "20300228",
            "2030-2-28",
            "+030-02-28",
            "2030-02-28T00:00",
        ] {
            assert!(parse_date(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn the_quick_reading_takes_plain_bookings_only() {
        let plain = br#"{"patientId":"P1","slotId":"D1-09","source":"ONLINE"}"#;
        assert!(quick_booking(plain).is_some());
        let spaced = b"{ \"patientId\" : \"P1\",\n\t\"note\": \"hi\", \"vip\": true, \"slotId\": \"D1-09\", \"source\": \"ONLINE\", \"x\": null }\r\n";
        assert!(quick_booking(spaced).is_some());
        let fields = r#""patientId":"P1","slotId":"D1-09","source":"ONLINE""#;
        for extra in [
            r#""note":"\u00e9""#,
            r#""note":"é""#,
            r#""note":1"#,
            r#""note":-1"#,
            r#""note":[]"#,
            r#""note":{}"#,
        ] {
            let body = format!("{{{fields},{extra}}}");
            assert!(quick_booking(body.as_bytes()).is_none(), "{body}");
            assert!(json_object(body.as_bytes()).is_ok(), "{body}");
        }
        let array = format!("[{{{fields}}}]");
        assert!(quick_booking(array.as_bytes()).is_none());
    }

    #[test]
    fn canonical_json_ignores_key_order_and_spacing() {
        let a: Value = serde_json::from_str(r#"{"b": 1, "a": {"y": [1, 2], "x": "é"}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":"é","y":[1,2]},"b":1}"#).unwrap();
        assert_eq!(canonical(&a), canonical(&b));
        assert_eq!(canonical(&a), r#"{"a":{"x":"é","y":[1,2]},"b":1}"#);
    }
}
