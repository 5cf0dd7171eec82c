//! The JSON shapes of the API and their conversion from engine views.
//! This is the only place that decides how the engine's values look on the
//! wire.

use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::engine::{
    Change, Decision, HistoryEntry, Outcome, SlotDetail, SlotSummary, Source, Status, TokenView,
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

/// A token's life-cycle status.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StatusDto {
    Allocated,
    Waitlisted,
    Cancelled,
    NoShow,
}

impl From<Status> for StatusDto {
    fn from(status: Status) -> StatusDto {
        match status {
            Status::Allocated => StatusDto::Allocated,
            Status::Waitlisted => StatusDto::Waitlisted,
            Status::Cancelled => StatusDto::Cancelled,
            Status::NoShow => StatusDto::NoShow,
        }
    }
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

/// Why a token changed status.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReasonDto {
    Allocated,
    Overbooked,
    BumpedLower,
    Waitlisted,
    Bumped,
    Promoted,
    CapacityReduced,
    Cancelled,
    NoShow,
}

impl From<crate::engine::Reason> for ReasonDto {
    fn from(reason: crate::engine::Reason) -> ReasonDto {
        use crate::engine::Reason;
        match reason {
            Reason::Allocated => ReasonDto::Allocated,
            Reason::Overbooked => ReasonDto::Overbooked,
            Reason::BumpedLower => ReasonDto::BumpedLower,
            Reason::Waitlisted => ReasonDto::Waitlisted,
            Reason::Bumped => ReasonDto::Bumped,
            Reason::Promoted => ReasonDto::Promoted,
            Reason::CapacityReduced => ReasonDto::CapacityReduced,
            Reason::Cancelled => ReasonDto::Cancelled,
            Reason::NoShow => ReasonDto::NoShow,
        }
    }
}

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

/// The answer to a cancel or no-show.
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
