// The API's codes in plain words for the people at the desk and in the
// doctor's room.

export const SOURCES = ["EMERGENCY", "PAID", "FOLLOW_UP", "ONLINE", "WALK_IN"];

const SOURCE_WORDS = {
  EMERGENCY: "emergency",
  PAID: "paid",
  FOLLOW_UP: "follow-up",
  ONLINE: "online",
  WALK_IN: "walk-in",
};

export function sourceWord(source) {
  return SOURCE_WORDS[source] || source;
}

const STATUS_WORDS = {
  ALLOCATED: "booked, not arrived",
  WAITLISTED: "on the waitlist",
  CHECKED_IN: "in the hall",
  CALLED: "called",
  IN_CONSULTATION: "with the doctor",
  SKIPPED: "skipped",
  COMPLETED: "seen",
  CANCELLED: "cancelled",
  NO_SHOW: "no-show",
  EXPIRED: "expired",
};

export function statusWord(status) {
  return STATUS_WORDS[status] || status;
}

const REASON_WORDS = {
  ALLOCATED: "given a seat",
  OVERBOOKED: "emergency beyond capacity",
  BUMPED_LOWER: "took a less urgent booking's seat",
  WAITLISTED: "slot full",
  BUMPED: "a more urgent booking took the seat",
  PROMOTED: "a seat came free",
  CAPACITY_REDUCED: "capacity lowered",
  CANCELLED: "cancelled",
  NO_SHOW: "did not come",
  CHECKED_IN: "arrived",
  RETURNED: "came back after a skip",
  CALLED: "called by the doctor",
  STARTED: "consultation started",
  COMPLETED: "consultation done",
  SKIPPED: "did not answer the call",
  SLOT_CLOSED: "the slot closed",
  DAY_ENDED: "the day ended",
  DOCTOR_ABSENT: "the doctor is absent",
};

/** Why a token's status changed, in a few words. */
export function reasonWord(reason) {
  return REASON_WORDS[reason] || reason;
}

/** The booking's decision in one sentence. */
export function decisionText(booking) {
  const token = booking.token;
  const slot = booking.slot;
  const who = `${token.patientId} (token ${token.tokenNumber})`;
  switch (booking.decision) {
    case "ALLOCATED":
      return `${who} has a seat in ${slot.slotId}, ${slot.startTime}–${slot.endTime}.`;
    case "OVERBOOKED":
      return `${who} is seated as an emergency beyond capacity: ${slot.slotId} is overbooked by ${slot.overbookedBy}.`;
    case "BUMPED_LOWER":
      return `${who} has a seat in ${slot.slotId}: the slot was full, so a less urgent booking gave up its seat.`;
    case "WAITLISTED":
      return `${who} is on the waitlist of ${slot.slotId}, position ${token.waitlistPosition}: the slot is full and nobody in it ranks below a ${sourceWord(token.source)} booking.`;
    default:
      return `${who}: ${booking.decision}.`;
  }
}

/**
 * One side effect of a change in plain words; `cause` is the token acted
 * on (the booking that bumped, say), when there is one.
 */
export function changeText(change, cause) {
  const who = change.patientId;
  switch (change.reason) {
    case "BUMPED":
      return `${who} moved to the waitlist: a ${cause ? cause.source : "more urgent"} booking outranked them.`;
    case "PROMOTED":
      return change.to === "CHECKED_IN"
        ? `${who} got a seat from the waitlist and is in the doctor's queue.`
        : `${who} got a seat from the waitlist.`;
    case "CAPACITY_REDUCED":
      return `${who} moved to the waitlist: the slot's capacity was lowered.`;
    case "NO_SHOW":
      return `${who} was marked as a no-show.`;
    case "SLOT_CLOSED":
      return `${who}'s place on the waitlist expired: the slot closed.`;
    case "DAY_ENDED":
      return `${who}'s token ended with the day (${statusWord(change.to)}).`;
    case "DOCTOR_ABSENT":
      return `${who} was cancelled: the doctor is absent that day.`;
    default:
      return `${who}: ${statusWord(change.from)} → ${statusWord(change.to)} (${change.reason}).`;
  }
}

/** What an action did to the token acted on. */
export function actionText(action, token) {
  const who = `${token.patientId} (token ${token.tokenNumber})`;
  switch (token.status) {
    case "CHECKED_IN":
      return `${who} is in the hall, number ${token.queuePosition} in the doctor's queue.`;
    case "WAITLISTED":
      return `${who} has arrived and is still on the waitlist, position ${token.waitlistPosition}.`;
    case "CANCELLED":
      return `${who} is cancelled.`;
    case "NO_SHOW":
      return `${who} is marked as a no-show.`;
    case "CALLED":
      return `Token ${token.tokenNumber} (${token.patientId}) is called.`;
    case "IN_CONSULTATION":
      return `Token ${token.tokenNumber} (${token.patientId}) is with the doctor.`;
    case "COMPLETED":
      return `Token ${token.tokenNumber} (${token.patientId}) is seen.`;
    case "SKIPPED":
      return `Token ${token.tokenNumber} (${token.patientId}) was skipped and can come back to the desk.`;
    default:
      return `${who}: ${action} done, now ${statusWord(token.status)}.`;
  }
}

/** An API error in words a receptionist or a doctor can act on. */
export function problemText(error) {
  const problem = error.problem || {};
  switch (error.code) {
    case "DOCTOR_BUSY":
      return "The doctor already has a patient called or in consultation. Complete or skip that patient first.";
    case "QUEUE_EMPTY":
      return "Nobody is waiting: no patient of this doctor has checked in yet.";
    case "DUPLICATE_BOOKING":
      return "This patient already has an active token in this slot.";
    case "WAITLIST_FULL":
      return "The slot's waitlist is full. Book another slot.";
    case "OVERBOOK_FULL":
      return "This slot cannot take more emergencies. Book the emergency into another slot.";
    case "SLOT_CLOSED":
      return "This slot is closed: it takes no more bookings or capacity changes.";
    case "NOT_TODAY":
      return "This can only be done on the slot's own day.";
    case "INVALID_TRANSITION":
      return `Not possible in the token's current state. ${problem.detail || ""}`.trim();
    case "FORBIDDEN":
      return "Your key's role may not do this.";
    case "VALIDATION_FAILED": {
      const fields = (problem.errors || []).map((field) => `${field.field} ${field.message}`);
      return fields.length ? `Please check: ${fields.join("; ")}.` : problem.detail || "Please check the form.";
    }
    case "RATE_LIMITED":
      return "Too many requests from this key; wait a moment and try again.";
    default:
      return error.message || "Something went wrong.";
  }
}
