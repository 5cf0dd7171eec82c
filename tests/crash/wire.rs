//! The contract's answers as the checks read them (only the fields they
//! use), and what an answer says about whether its change happened.

use serde::Deserialize;

/// The statuses a token can be in before it is final while only
/// bookings, cancels and no-shows touch it (the kill rounds' load).
pub const BOOKED: [&str; 2] = ["ALLOCATED", "WAITLISTED"];

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenDto {
    pub token_id: String,
    pub token_number: u32,
    pub patient_id: String,
    pub slot_id: String,
    pub doctor_id: String,
    pub priority: u8,
    pub status: String,
    pub waitlist_position: Option<u32>,
    pub checked_in_at: Option<String>,
    pub queue_position: Option<u32>,
    pub estimated_call_at: Option<String>,
    /// Only in `GET /tokens/{id}`.
    #[serde(default)]
    pub history: Vec<HistoryDto>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryDto {
    pub at: String,
    pub from: Option<String>,
    pub to: String,
    pub reason: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeDto {
    pub token_id: String,
    pub patient_id: String,
    pub from: String,
    pub to: String,
    pub reason: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BookingReply {
    pub decision: String,
    pub token: TokenDto,
    pub changes: Vec<ChangeDto>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionReply {
    pub token: TokenDto,
    pub changes: Vec<ChangeDto>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotDetail {
    pub slot_id: String,
    pub doctor_id: String,
    pub date: String,
    pub start_time: String,
    pub capacity: u32,
    pub allocated_count: u32,
    pub waitlist_count: u32,
    pub available: u32,
    pub overbooked: bool,
    pub overbooked_by: u32,
    pub closed: bool,
    pub closes_at: String,
    pub allocated: Vec<TokenDto>,
    pub waitlist: Vec<TokenDto>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotSummary {
    pub slot_id: String,
    pub closed: bool,
    pub closes_at: String,
}

/// The answer to `POST /slots/{slotId}/close`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloseReply {
    pub slot: SlotSummary,
    pub changes: Vec<ChangeDto>,
}

/// `GET /doctors/{doctorId}/queue`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DoctorQueue {
    pub doctor_id: String,
    pub current: Option<TokenDto>,
    pub call_queue: Vec<TokenDto>,
    pub not_arrived: Vec<TokenDto>,
    pub skipped: Vec<TokenDto>,
    pub waitlist: Vec<TokenDto>,
    pub completed_count: usize,
    pub no_show_count: usize,
    pub cancelled_count: usize,
    pub expired_count: usize,
}

/// `data` of `event: token`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenEvent {
    pub at: String,
    pub token_id: String,
    pub slot_id: String,
    pub from: Option<String>,
    pub to: String,
    pub reason: String,
}

/// `data` of `event: slot`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotEvent {
    pub reason: String,
    pub slot: SlotSummary,
}

/// What an answer says about whether the change happened.
pub enum Answer {
    /// 2xx: acknowledged. The body when it arrived whole.
    Ack(Option<Vec<u8>>),
    /// An error answer; by the contract the request changed nothing.
    Refused(u16, String),
    /// No answer (the server died), a timeout or a 5xx: it may or may not
    /// have happened.
    InDoubt,
}

pub async fn answer(request: reqwest::RequestBuilder) -> Answer {
    let Ok(response) = request.send().await else {
        return Answer::InDoubt;
    };
    let status = response.status();
    let body = response.bytes().await.ok().map(|body| body.to_vec());
    if status.is_success() {
        Answer::Ack(body)
    } else if status.is_server_error() || status == reqwest::StatusCode::REQUEST_TIMEOUT {
        Answer::InDoubt
    } else {
        let text = String::from_utf8_lossy(body.as_deref().unwrap_or_default()).into_owned();
        Answer::Refused(status.as_u16(), text)
    }
}
