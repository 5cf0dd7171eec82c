//! The JSON shapes of the API and their conversion from engine views.
//! This is the only place that decides how the engine's values look on the
//! wire.

use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::engine::{
    Absence, BoardEntry, Change, Decision, DoctorQueue, HistoryEntry, Outcome, Reason, SlotDetail,
    SlotSummary, Source, Status, TokenView,
};

pub fn date(date: jiff::civil::Date) -> String {
    date.to_string()
}

/// `HH:MM`, written directly: this runs for every slot in every answer.
pub fn time(time: jiff::civil::Time) -> String {
    format!("{:02}:{:02}", time.hour(), time.minute())
}

pub fn timestamp(at: jiff::Timestamp) -> String {
    at.to_string()
}

/// A token's status, named as the engine names it; the schema lists
/// every status the engine has, so the names live in one place.
#[derive(Debug, Clone, Copy)]
pub struct StatusDto(Status);

impl From<Status> for StatusDto {
    fn from(status: Status) -> StatusDto {
        StatusDto(status)
    }
}

impl Serialize for StatusDto {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0.as_str())
    }
}

impl utoipa::PartialSchema for StatusDto {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        names_schema(
            "A token's status in the OPD day",
            Status::ALL.map(Status::as_str),
        )
    }
}

impl ToSchema for StatusDto {}

/// A string schema that takes one of `names`.
fn names_schema<const N: usize>(
    description: &str,
    names: [&'static str; N],
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .description(Some(description))
        .enum_values(Some(names))
        .into()
}

/// Where a request comes from; fixes its priority (1 is highest).
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SourceDto {
    Emergency,
    Paid,
    FollowUp,
    Online,
    WalkIn,
}

impl From<Source> for SourceDto {
    fn from(source: Source) -> SourceDto {
        match source {
            Source::Emergency => SourceDto::Emergency,
            Source::Paid => SourceDto::Paid,
            Source::FollowUp => SourceDto::FollowUp,
            Source::Online => SourceDto::Online,
            Source::WalkIn => SourceDto::WalkIn,
        }
    }
}

/// How a booking was placed.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DecisionDto {
    Allocated,
    Overbooked,
    BumpedLower,
    Waitlisted,
}

impl From<Decision> for DecisionDto {
    fn from(decision: Decision) -> DecisionDto {
        match decision {
            Decision::Allocated => DecisionDto::Allocated,
            Decision::Overbooked => DecisionDto::Overbooked,
            Decision::BumpedLower => DecisionDto::BumpedLower,
            Decision::Waitlisted => DecisionDto::Waitlisted,
        }
    }
}

/// Why a token changed status, named as the engine names it.
#[derive(Debug, Clone, Copy)]
pub struct ReasonDto(Reason);

impl From<Reason> for ReasonDto {
    fn from(reason: Reason) -> ReasonDto {
        ReasonDto(reason)
    }
}

impl Serialize for ReasonDto {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0.as_str())
    }
}

impl utoipa::PartialSchema for ReasonDto {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        names_schema(
            "Why a token changed status",
            Reason::ALL.map(Reason::as_str),
        )
    }
}

impl ToSchema for ReasonDto {}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenDto {
    pub token_id: Uuid,
    /// Per doctor and date, from 1, in order of request, never reused.
    pub token_number: u32,
    pub patient_id: String,
    pub slot_id: String,
    pub doctor_id: String,
    pub source: SourceDto,
    /// 1 (EMERGENCY, highest) to 5 (WALK_IN).
    pub priority: u8,
    pub status: StatusDto,
    /// 1-based while WAITLISTED, else null.
    pub waitlist_position: Option<u32>,
    /// When the patient first checked in; kept for life.
    #[schema(format = DateTime)]
    pub checked_in_at: Option<String>,
    /// 1-based place in the doctor's call order while CHECKED_IN, else
    /// null.
    pub queue_position: Option<u32>,
    /// When the token is expected to be called, while CHECKED_IN, else
    /// null; never earlier for a token later in call order.
    #[schema(format = DateTime)]
    pub estimated_call_at: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

impl From<&TokenView> for TokenDto {
    fn from(token: &TokenView) -> TokenDto {
        TokenDto {
            token_id: token.id,
            token_number: token.number,
            patient_id: token.patient.to_string(),
            slot_id: token.slot.to_string(),
            doctor_id: token.doctor.to_string(),
            source: token.source.into(),
            priority: token.source.priority().get(),
            status: token.status.into(),
            waitlist_position: token.waitlist_position,
            checked_in_at: token.checked_in_at.map(timestamp),
            queue_position: token.queue_position,
            estimated_call_at: token.estimated_call_at.map(timestamp),
            created_at: timestamp(token.created_at),
            updated_at: timestamp(token.updated_at),
        }
    }
}

/// A status change of another token, caused by the request.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChangeDto {
    pub token_id: Uuid,
    pub patient_id: String,
    pub from: StatusDto,
    pub to: StatusDto,
    pub reason: ReasonDto,
}

impl From<&Change> for ChangeDto {
    fn from(change: &Change) -> ChangeDto {
        ChangeDto {
            token_id: change.token,
            patient_id: change.patient.to_string(),
            from: change.from.into(),
            to: change.to.into(),
            reason: change.reason.into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SlotSummaryDto {
    pub slot_id: String,
    pub doctor_id: String,
    #[schema(format = Date)]
    pub date: String,
    /// HH:MM, clinic local time.
    pub start_time: String,
    pub end_time: String,
    pub capacity: u32,
    pub allocated_count: u32,
    pub waitlist_count: u32,
    /// max(0, capacity − allocated).
    pub available: u32,
    pub overbooked: bool,
    /// max(0, allocated − capacity).
    pub overbooked_by: u32,
    /// Whether the slot has closed: it takes no bookings or capacity
    /// changes.
    pub closed: bool,
    /// When the slot will close, or when it did (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub closes_at: String,
}

impl From<&SlotSummary> for SlotSummaryDto {
    fn from(slot: &SlotSummary) -> SlotSummaryDto {
        SlotSummaryDto {
            slot_id: slot.id.to_string(),
            doctor_id: slot.doctor.to_string(),
            date: date(slot.date),
            start_time: time(slot.start),
            end_time: time(slot.end),
            capacity: slot.capacity,
            allocated_count: slot.allocated,
            waitlist_count: slot.waitlisted,
            available: slot.available(),
            overbooked: slot.is_overbooked(),
            overbooked_by: slot.overbooked_by(),
            closed: slot.closed,
            closes_at: timestamp(slot.closes_at),
        }
    }
}

/// A slot with its queues.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SlotDetailDto {
    #[serde(flatten)]
    pub summary: SlotSummaryDto,
    /// Service order: priority, then arrival.
    pub allocated: Vec<TokenDto>,
    /// Promotion order: priority, then arrival.
    pub waitlist: Vec<TokenDto>,
}

impl From<&SlotDetail> for SlotDetailDto {
    fn from(slot: &SlotDetail) -> SlotDetailDto {
        SlotDetailDto {
            summary: (&slot.summary).into(),
            allocated: slot.allocated.iter().map(TokenDto::from).collect(),
            waitlist: slot.waitlist.iter().map(TokenDto::from).collect(),
        }
    }
}

/// The answer to `POST /tokens`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BookingDto {
    pub decision: DecisionDto,
    pub token: TokenDto,
    pub changes: Vec<ChangeDto>,
    pub slot: SlotSummaryDto,
}

/// The answer to an action on a token, and to call-next.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionDto {
    pub token: TokenDto,
    pub changes: Vec<ChangeDto>,
    pub slot: SlotSummaryDto,
}

impl From<&Outcome> for ActionDto {
    fn from(outcome: &Outcome) -> ActionDto {
        ActionDto {
            token: (&outcome.token).into(),
            changes: outcome.changes.iter().map(ChangeDto::from).collect(),
            slot: (&outcome.slot).into(),
        }
    }
}

/// One line of a token's history.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryDto {
    #[schema(format = DateTime)]
    pub at: String,
    /// Null on creation.
    pub from: Option<StatusDto>,
    pub to: StatusDto,
    pub reason: ReasonDto,
    /// The name of the API key that acted (`anonymous` when the server runs
    /// without keys); never the key itself.
    pub actor: String,
}

impl From<&HistoryEntry> for HistoryDto {
    fn from(entry: &HistoryEntry) -> HistoryDto {
        HistoryDto {
            at: timestamp(entry.at),
            from: entry.from.map(StatusDto::from),
            to: entry.to.into(),
            reason: entry.reason.into(),
            actor: entry.actor.to_string(),
        }
    }
}

/// A token with its history, oldest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenDetailDto {
    #[serde(flatten)]
    pub token: TokenDto,
    pub history: Vec<HistoryDto>,
}

/// The answer to `PATCH /slots/{slotId}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CapacityChangeDto {
    pub slot: SlotSummaryDto,
    pub changes: Vec<ChangeDto>,
}

/// A token a doctor's absence cancelled: what the desk needs to phone
/// the patient.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CancelledTokenDto {
    pub token_id: Uuid,
    pub token_number: u32,
    pub patient_id: String,
    pub slot_id: String,
    pub source: SourceDto,
    /// The status the token had before it was cancelled.
    pub from: StatusDto,
}

/// The answer to `POST /doctors/{doctorId}/absences`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AbsenceDto {
    pub doctor_id: String,
    #[schema(format = Date)]
    pub date: String,
    /// False when the absence was recorded before: nothing changed.
    pub changed: bool,
    /// Every slot of the doctor's date, in start time order, as it stands
    /// after: all closed.
    pub slots: Vec<SlotSummaryDto>,
    /// The tokens this call cancelled (reason DOCTOR_ABSENT), slot by slot
    /// in start time order, seat holders in service order, then the
    /// waitlist in promotion order.
    pub cancelled: Vec<CancelledTokenDto>,
    /// The consultation in progress, left to finish; null when there is
    /// none.
    pub in_consultation: Option<TokenDto>,
}

impl From<&Absence> for AbsenceDto {
    fn from(absence: &Absence) -> AbsenceDto {
        AbsenceDto {
            doctor_id: absence.doctor.to_string(),
            date: date(absence.date),
            changed: absence.changed(),
            slots: absence
                .slots
                .iter()
                .map(|part| (&part.outcome.slot).into())
                .collect(),
            cancelled: absence
                .slots
                .iter()
                .flat_map(|part| {
                    part.outcome.changes.iter().map(|change| CancelledTokenDto {
                        token_id: change.token,
                        token_number: change.number,
                        patient_id: change.patient.to_string(),
                        slot_id: part.outcome.slot.id.to_string(),
                        source: change.source.into(),
                        from: change.from.into(),
                    })
                })
                .collect(),
            in_consultation: absence.in_consultation.as_ref().map(Into::into),
        }
    }
}

/// The answer to `GET /doctors/{doctorId}/queue`: the doctor's day over
/// all of the doctor's slots of the date.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DoctorQueueDto {
    pub doctor_id: String,
    #[schema(format = Date)]
    pub date: String,
    /// The token CALLED or IN_CONSULTATION.
    pub current: Option<TokenDto>,
    /// CHECKED_IN tokens in call order.
    pub call_queue: Vec<TokenDto>,
    /// ALLOCATED tokens in call order.
    pub not_arrived: Vec<TokenDto>,
    /// SKIPPED tokens in call order.
    pub skipped: Vec<TokenDto>,
    /// By slot start time, then promotion order.
    pub waitlist: Vec<TokenDto>,
    pub completed_count: u32,
    pub no_show_count: u32,
    pub cancelled_count: u32,
    /// Always 0 until slots close (a later change).
    pub expired_count: u32,
}

impl From<&DoctorQueue> for DoctorQueueDto {
    fn from(queue: &DoctorQueue) -> DoctorQueueDto {
        let tokens = |tokens: &[TokenView]| tokens.iter().map(TokenDto::from).collect();
        DoctorQueueDto {
            doctor_id: queue.doctor.to_string(),
            date: date(queue.date),
            current: queue.current.as_ref().map(TokenDto::from),
            call_queue: tokens(&queue.call_queue),
            not_arrived: tokens(&queue.not_arrived),
            skipped: tokens(&queue.skipped),
            waitlist: tokens(&queue.waitlist),
            completed_count: queue.completed,
            no_show_count: queue.no_show,
            cancelled_count: queue.cancelled,
            expired_count: queue.expired,
        }
    }
}

/// The token with the doctor, as the board shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NowServingDto {
    pub token_number: u32,
    pub status: StatusDto,
}

/// One doctor on the waiting-hall board. No patient ids.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BoardDoctorDto {
    pub doctor_id: String,
    pub now_serving: Option<NowServingDto>,
    /// The token numbers of the first five in the call queue.
    pub next: Vec<u32>,
    /// How many tokens are CHECKED_IN.
    pub waiting: u32,
}

/// The answer to `GET /board`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BoardDto {
    #[schema(format = Date)]
    pub date: String,
    /// By doctor id.
    pub doctors: Vec<BoardDoctorDto>,
}

impl BoardDto {
    pub fn new(day: jiff::civil::Date, entries: &[BoardEntry]) -> BoardDto {
        BoardDto {
            date: date(day),
            doctors: entries
                .iter()
                .map(|entry| BoardDoctorDto {
                    doctor_id: entry.doctor.to_string(),
                    now_serving: entry.now_serving.map(|(number, status)| NowServingDto {
                        token_number: number,
                        status: status.into(),
                    }),
                    next: entry.next.clone(),
                    waiting: entry.waiting,
                })
                .collect(),
        }
    }
}
