//! `GET /reports/day` and `GET /reports/days`: the clinic's day reports
//! (see [`crate::service::report`]), as JSON or, with `Accept: text/csv`,
//! as CSV with one row per doctor and one for the clinic.

use std::fmt::Write as _;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use jiff::civil::Date;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::routes;

use super::auth::Access;
use super::dto;
use super::error::{ApiError, FieldError, Result};
use super::routes::Routes;
use super::AppState;
use crate::engine::{DoctorId, Source};
use crate::service::report::{
    self, DayReport, EstimateError, Figures, Spread, DECISIONS, OUTCOMES, RANGE_DAYS_MAX,
};

pub fn router() -> Routes {
    Routes::new()
        .route(routes!(day), Access::Monitoring)
        .route(routes!(days), Access::Monitoring)
}

/// The media type of the CSV answers.
const CSV: &str = "text/csv; charset=utf-8";

/// One date's report.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DayReportDto {
    /// YYYY-MM-DD.
    pub date: String,
    /// The whole clinic, every doctor together.
    pub clinic: FiguresDto,
    /// Each doctor with a slot or a token that day, by id; only the one
    /// asked for with `doctorId`.
    pub doctors: Vec<DoctorReportDto>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DoctorReportDto {
    pub doctor_id: String,
    pub figures: FiguresDto,
}

/// A range of days' reports.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DaysReportDto {
    pub from: String,
    pub to: String,
    /// One report per date, `from` to `to`.
    pub days: Vec<DayReportDto>,
}

/// The figures of a doctor, or of the clinic, on one date. Durations are
/// in seconds.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FiguresDto {
    /// Tokens booked for the date.
    pub tokens: u32,
    pub by_source: BySourceDto,
    /// Bookings by the engine's decision.
    pub decisions: DecisionsDto,
    /// Tokens by final status; those still active are in none.
    pub outcomes: OutcomesDto,
    /// First check-in to first call.
    pub wait_to_call: SpreadDto,
    /// The same waits by the hour of the clinic's day the patient checked
    /// in (its time zone), in hour order; hours without a wait are left
    /// out. Not in the CSV.
    pub waits_by_hour: Vec<HourSpreadDto>,
    /// The answered call to the start of the consultation.
    pub wait_to_start: SpreadDto,
    /// Start to completion of consultations the doctor completed.
    pub consultation: SpreadDto,
    /// The doctor's slots' lengths, added up.
    pub session_seconds: f64,
    /// The consultations' lengths, added up.
    pub consultation_seconds: f64,
    /// consultationSeconds ÷ sessionSeconds; null without sessions.
    pub utilisation: Option<f64>,
    /// sessionSeconds − consultationSeconds, at least 0.
    pub idle_seconds: f64,
    pub estimate_error: EstimateErrorDto,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BySourceDto {
    #[serde(rename = "EMERGENCY")]
    pub emergency: u32,
    #[serde(rename = "PAID")]
    pub paid: u32,
    #[serde(rename = "FOLLOW_UP")]
    pub follow_up: u32,
    #[serde(rename = "ONLINE")]
    pub online: u32,
    #[serde(rename = "WALK_IN")]
    pub walk_in: u32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DecisionsDto {
    #[serde(rename = "ALLOCATED")]
    pub allocated: u32,
    #[serde(rename = "BUMPED_LOWER")]
    pub bumped_lower: u32,
    #[serde(rename = "OVERBOOKED")]
    pub overbooked: u32,
    #[serde(rename = "WAITLISTED")]
    pub waitlisted: u32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OutcomesDto {
    #[serde(rename = "COMPLETED")]
    pub completed: u32,
    #[serde(rename = "NO_SHOW")]
    pub no_show: u32,
    #[serde(rename = "CANCELLED")]
    pub cancelled: u32,
    #[serde(rename = "EXPIRED")]
    pub expired: u32,
}

/// How durations are spread: nearest-rank median and 90th percentile, in
/// seconds; null when there are none.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpreadDto {
    pub count: usize,
    pub median_seconds: Option<f64>,
    pub p90_seconds: Option<f64>,
}

/// The waits of the patients who checked in during one hour.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HourSpreadDto {
    /// 0–23, in the clinic's time zone: 9 is 09:00–09:59.
    pub hour: i8,
    pub count: usize,
    pub median_seconds: Option<f64>,
    pub p90_seconds: Option<f64>,
}

/// How far calls came from the estimatedCallAt of the patient's check-in.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EstimateErrorDto {
    /// Calls measured.
    pub count: usize,
    /// Mean of |call time − estimate|, in seconds.
    pub mean_absolute_seconds: Option<f64>,
    /// Share of calls later than estimated.
    pub underestimated_share: Option<f64>,
}

/// One date's report, per doctor and for the clinic.
#[utoipa::path(
    get,
    path = "/reports/day",
    tag = "reports",
    params(
        ("date" = Option<String>, Query, pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$", description = "YYYY-MM-DD; today in the clinic's zone when absent"),
        ("doctorId" = Option<String>, Query, pattern = r"^[A-Za-z0-9._-]{1,64}$", description = "Only this doctor in `doctors` (the clinic's figures stay the whole clinic's)"),
    ),
    responses(
        (status = 200, description = "The report; CSV (one row per doctor and one for the clinic) with `Accept: text/csv`",
            content((DayReportDto = "application/json"), (String = "text/csv"))),
        (status = 422, description = "VALIDATION_FAILED: a date or doctor id that is not valid", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 503, description = "UNAVAILABLE", body = super::openapi::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn day(
    State(app): State<AppState>,
    headers: HeaderMap,
    query: std::result::Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response> {
    let Query(pairs) = query.map_err(|error| ApiError::Malformed(error.body_text()))?;
    let mut errors = Vec::new();
    let date = match value(&pairs, "date") {
        Some(raw) => parse_date(raw, "date", &mut errors),
        None => Some(app.service.today()),
    };
    let doctor = parse_doctor(&pairs, &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let date = date.expect("a date without errors");
    let events = app.service.report_events(date).await?;
    let report = report::day_report(date, app.service.zone(), &events, doctor.as_ref());
    Ok(if wants_csv(&headers) {
        csv(std::slice::from_ref(&report))
    } else {
        Json(DayReportDto::from(&report)).into_response()
    })
}

/// The report of every date in a range of at most 92 days.
#[utoipa::path(
    get,
    path = "/reports/days",
    tag = "reports",
    params(
        ("from" = String, Query, pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$", description = "First date, YYYY-MM-DD"),
        ("to" = String, Query, pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$", description = "Last date, YYYY-MM-DD: not before `from`, and at most 92 days in all"),
        ("doctorId" = Option<String>, Query, pattern = r"^[A-Za-z0-9._-]{1,64}$", description = "Only this doctor in each day's `doctors`"),
    ),
    responses(
        (status = 200, description = "A report per date; CSV (one row per date and doctor, and per date for the clinic) with `Accept: text/csv`",
            content((DaysReportDto = "application/json"), (String = "text/csv"))),
        (status = 422, description = "VALIDATION_FAILED: a missing or invalid date, `to` before `from`, more than 92 days, or an invalid doctor id", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 503, description = "UNAVAILABLE", body = super::openapi::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn days(
    State(app): State<AppState>,
    headers: HeaderMap,
    query: std::result::Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response> {
    let Query(pairs) = query.map_err(|error| ApiError::Malformed(error.body_text()))?;
    let mut errors = Vec::new();
    let required = |name: &'static str, errors: &mut Vec<FieldError>| match value(&pairs, name) {
        Some(raw) => parse_date(raw, name, errors),
        None => {
            errors.push(FieldError::new(name, "is required: a date, YYYY-MM-DD"));
            None
        }
    };
    let from = required("from", &mut errors);
    let to = required("to", &mut errors);
    let doctor = parse_doctor(&pairs, &mut errors);
    if let (Some(from), Some(to)) = (from, to) {
        if to < from {
            errors.push(FieldError::new("to", "must not be before from"));
        } else if (to - from).get_days() >= RANGE_DAYS_MAX {
            errors.push(FieldError::new(
                "to",
                "the range may hold at most 92 days, from and to included",
            ));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let (from, to) = (from.expect("checked"), to.expect("checked"));
    let mut reports = Vec::new();
    let mut date = from;
    loop {
        let events = app.service.report_events(date).await?;
        reports.push(report::day_report(
            date,
            app.service.zone(),
            &events,
            doctor.as_ref(),
        ));
        match date.tomorrow() {
            Ok(next) if next <= to => date = next,
            _ => break,
        }
    }
    Ok(if wants_csv(&headers) {
        csv(&reports)
    } else {
        Json(DaysReportDto {
            from: dto::date(from),
            to: dto::date(to),
            days: reports.iter().map(DayReportDto::from).collect(),
        })
        .into_response()
    })
}

/// The last value of a query parameter.
fn value<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

fn parse_date(raw: &str, field: &'static str, errors: &mut Vec<FieldError>) -> Option<Date> {
    let parsed = (raw.len() == 10)
        .then(|| raw.parse::<Date>().ok())
        .flatten();
    if parsed.is_none() {
        errors.push(FieldError::new(field, "must be a date, YYYY-MM-DD"));
    }
    parsed
}

fn parse_doctor(pairs: &[(String, String)], errors: &mut Vec<FieldError>) -> Option<DoctorId> {
    let raw = value(pairs, "doctorId")?;
    let doctor = DoctorId::parse(raw);
    if doctor.is_none() {
        errors.push(FieldError::new(
            "doctorId",
            "must be 1–64 characters of A–Z, a–z, 0–9, '.', '_' or '-'",
        ));
    }
    doctor
}

/// Whether the client asked for CSV.
fn wants_csv(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|media| {
            media
                .split(';')
                .next()
                .is_some_and(|kind| kind.trim().eq_ignore_ascii_case("text/csv"))
        })
}

/// The CSV columns, after `date`, `scope` and `doctorId`.
fn csv_header() -> String {
    let mut header = String::from("date,scope,doctorId,tokens");
    for source in Source::ALL {
        let _ = write!(header, ",source_{}", source.as_str());
    }
    for decision in DECISIONS {
        let _ = write!(header, ",decision_{}", decision.reason().as_str());
    }
    for outcome in OUTCOMES {
        let _ = write!(header, ",outcome_{}", outcome.as_str());
    }
    for spread in ["waitToCall", "waitToStart", "consultation"] {
        let _ = write!(
            header,
            ",{spread}Count,{spread}MedianSeconds,{spread}P90Seconds"
        );
    }
    header.push_str(
        ",sessionSeconds,consultationSeconds,utilisation,idleSeconds,\
         estimateCount,estimateMeanAbsoluteSeconds,estimateUnderestimatedShare\n",
    );
    header
}

/// The reports as CSV: per date, the clinic's row, then each doctor's.
/// Ids are made of letters, digits, `.`, `_` and `-`, so no field needs
/// quoting; a missing value is an empty field.
fn csv(reports: &[DayReport]) -> Response {
    let mut text = csv_header();
    for report in reports {
        let date = dto::date(report.date);
        csv_row(&mut text, &date, "clinic", "", &report.clinic);
        for (doctor, figures) in &report.doctors {
            csv_row(&mut text, &date, "doctor", doctor.as_str(), figures);
        }
    }
    let mut response = text.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CSV));
    response
}

fn csv_row(text: &mut String, date: &str, scope: &str, doctor: &str, figures: &Figures) {
    let optional = |value: Option<f64>| value.map(|value| value.to_string()).unwrap_or_default();
    let _ = write!(text, "{date},{scope},{doctor},{}", figures.tokens);
    for count in figures
        .by_source
        .iter()
        .chain(&figures.decisions)
        .chain(&figures.outcomes)
    {
        let _ = write!(text, ",{count}");
    }
    for spread in [
        &figures.wait_to_call,
        &figures.wait_to_start,
        &figures.consultation,
    ] {
        let _ = write!(
            text,
            ",{},{},{}",
            spread.count,
            optional(spread.median),
            optional(spread.p90)
        );
    }
    let estimate = &figures.estimate_error;
    let _ = writeln!(
        text,
        ",{},{},{},{},{},{},{}",
        figures.session_seconds,
        figures.consultation_seconds,
        optional(figures.utilisation),
        figures.idle_seconds,
        estimate.count,
        optional(estimate.mean_absolute_seconds),
        optional(estimate.underestimated_share),
    );
}

impl From<&DayReport> for DayReportDto {
    fn from(report: &DayReport) -> DayReportDto {
        DayReportDto {
            date: dto::date(report.date),
            clinic: FiguresDto::from(&report.clinic),
            doctors: report
                .doctors
                .iter()
                .map(|(doctor, figures)| DoctorReportDto {
                    doctor_id: doctor.to_string(),
                    figures: FiguresDto::from(figures),
                })
                .collect(),
        }
    }
}

impl From<&Figures> for FiguresDto {
    fn from(figures: &Figures) -> FiguresDto {
        let [emergency, paid, follow_up, online, walk_in] = figures.by_source;
        let [allocated, bumped_lower, overbooked, waitlisted] = figures.decisions;
        let [completed, no_show, cancelled, expired] = figures.outcomes;
        FiguresDto {
            tokens: figures.tokens,
            by_source: BySourceDto {
                emergency,
                paid,
                follow_up,
                online,
                walk_in,
            },
            decisions: DecisionsDto {
                allocated,
                bumped_lower,
                overbooked,
                waitlisted,
            },
            outcomes: OutcomesDto {
                completed,
                no_show,
                cancelled,
                expired,
            },
            wait_to_call: SpreadDto::from(&figures.wait_to_call),
            waits_by_hour: figures
                .waits_by_hour
                .iter()
                .map(|(hour, spread)| HourSpreadDto {
                    hour: *hour,
                    count: spread.count,
                    median_seconds: spread.median,
                    p90_seconds: spread.p90,
                })
                .collect(),
            wait_to_start: SpreadDto::from(&figures.wait_to_start),
            consultation: SpreadDto::from(&figures.consultation),
            session_seconds: figures.session_seconds,
            consultation_seconds: figures.consultation_seconds,
            utilisation: figures.utilisation,
            idle_seconds: figures.idle_seconds,
            estimate_error: EstimateErrorDto::from(&figures.estimate_error),
        }
    }
}

impl From<&Spread> for SpreadDto {
    fn from(spread: &Spread) -> SpreadDto {
        SpreadDto {
            count: spread.count,
            median_seconds: spread.median,
            p90_seconds: spread.p90,
        }
    }
}

impl From<&EstimateError> for EstimateErrorDto {
    fn from(error: &EstimateError) -> EstimateErrorDto {
        EstimateErrorDto {
            count: error.count,
            mean_absolute_seconds: error.mean_absolute_seconds,
            underestimated_share: error.underestimated_share,
        }
    }
}
