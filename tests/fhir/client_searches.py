"""client_searches.py FHIR_BASE_URL VIEWER_KEY DOCTOR_FD2_KEY

Runs the searches a hospital system would run against a running OPD
Token Engine with a real FHIR client library (fhirpy), after
scripted_day.py played the day: Schedule by actor, Slot by schedule,
start range and status, Appointment by date, practitioner, status and
patient identifier, reads by id, paging along the server's next links,
and the errors fhirpy raises from the server's OperationOutcomes. Each
check prints a line; exits non-zero on the first failure.
"""

import datetime
import sys
import zoneinfo

from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import ForbiddenError, OperationOutcome, ResourceNotFound
from fhirpy.base.searchset import Raw

BASE, VIEWER, DOCTOR_FD2 = sys.argv[1:4]
ZONE = zoneinfo.ZoneInfo(sys.argv[4] if len(sys.argv) > 4 else "UTC")
NS = "https://opd-token-engine.org/fhir"
client = SyncFHIRClient(BASE, authorization=f"Bearer {VIEWER}")
passed = 0


def check(what, condition, detail=""):
    global passed
    if not condition:
        sys.exit(f"client_searches.py: FAILED {what} {detail}")
    passed += 1
    print(f"ok - {what}")


def extension(resource, name):
    for found in resource.get("extension", []):
        if found["url"] == f"{NS}/StructureDefinition/{name}":
            return next(value for key, value in found.items() if key.startswith("value"))
    return None


today = datetime.datetime.now(ZONE).date()
tomorrow = today + datetime.timedelta(days=1)

schedules = client.resources("Schedule").fetch_all()
ids = sorted(schedule.id for schedule in schedules)
check("Schedule search lists every doctor", {"FD1", "FD2", "F..D.-3"} <= set(ids), ids)
fd1 = client.resources("Schedule").search(actor="Practitioner/FD1").fetch_all()
check("Schedule?actor= finds the doctor's schedule", [s.id for s in fd1] == ["FD1"])

slots = client.resources("Slot").search(schedule="Schedule/FD1", start__ge=today, start__lt=tomorrow).fetch_all()
check("Slot?schedule=&start=ge&start=lt finds the doctor's slots of the day",
      [s.id for s in slots] == ["FHIR-A", "FHIR-B"], [s.id for s in slots])
by_id = {s.id: s for s in slots}
check("an overbooked slot is busy and overbooked",
      by_id["FHIR-A"].status == "busy" and by_id["FHIR-A"].overbooked is True)
check("a closed slot is busy-unavailable", by_id["FHIR-B"].status == "busy-unavailable")
check("slot start is an instant in the clinic's zone",
      datetime.datetime.fromisoformat(by_id["FHIR-A"].start)
      == datetime.datetime.combine(today, datetime.time(9), ZONE))
free = client.resources("Slot").search(schedule="Schedule/FD2", status="free").fetch_all()
check("Slot?status=free leaves out full slots", [s.id for s in free] == [], [s.id for s in free])
escaped = client.resources("Slot").search(schedule="Schedule/F..D.-3").fetch_all()
check("a slot id with '.' and '_' reads back", [s.get_by_path(["identifier", 0, "value"]) for s in escaped] == ["fhir_d.09"])

day = client.resources("Appointment").search(practitioner="Practitioner/FD1", date=today)
everyone = day.limit(2).fetch_all()
first_page = day.limit(2).fetch_raw()
check("Appointment paging follows the next links to every match",
      len(everyone) == first_page.total and len({a.id for a in everyone}) == len(everyone) and len(everyone) > 2,
      f"{len(everyone)} of {first_page.total}")
statuses = {extension(a, "token-status"): a.status for a in everyone}
check("token statuses map to appointment statuses",
      statuses == {"COMPLETED": "fulfilled", "SKIPPED": "booked", "WAITLISTED": "waitlist",
                   "IN_CONSULTATION": "fulfilled", "ALLOCATED": "booked", "CANCELLED": "cancelled",
                   "NO_SHOW": "noshow", "EXPIRED": "cancelled"}, statuses)
arrived = client.resources("Appointment").search(status="arrived", date=today).fetch_all()
check("Appointment?status=arrived finds the checked-in and the called",
      sorted(extension(a, "token-status") for a in arrived) == ["CALLED", "CHECKED_IN"])
p3 = client.resources("Appointment").search(Raw(**{"patient:identifier": f"{NS}/sid/patient-id|P3"})).fetch_all()
check("Appointment?patient:identifier= finds the patient's appointment",
      len(p3) == 1 and extension(p3[0], "token-status-reason") == "BUMPED" and extension(p3[0], "checked-in-at"))
read = client.get("Appointment", p3[0].id)
check("an Appointment reads back by id", read["id"] == p3[0].id and read["status"] == "waitlist")
slot_of_p3 = client.reference(reference=p3[0]["slot"][0]["reference"]).to_resource()
check("an Appointment's slot reference resolves", slot_of_p3.id == "FHIR-A")
closed = client.resources("Appointment").search(slot="Slot/FHIR-B").fetch_all()
closed_statuses = sorted(extension(a, "token-status") for a in closed)
check("Appointment?slot= of a closed slot finds its no-shows and its expired token, nobody waiting",
      closed_statuses == ["EXPIRED", "NO_SHOW", "NO_SHOW"], closed_statuses)

lenient = SyncFHIRClient(BASE, authorization=f"Bearer {VIEWER}", extra_headers={"Prefer": "handling=lenient"})
count = lenient.resources("Slot").search(schedule="Schedule/FD1").count()
check("a lenient client's count() reads the total", count == 2, count)

try:
    client.get("Slot", "no-such-slot")
    check("an unknown slot is not found", False)
except ResourceNotFound:
    check("an unknown slot is not found", True)
try:
    client.resources("Appointment").search(colour="blue").fetch()
    check("an unknown parameter is refused", False)
except OperationOutcome as outcome:
    issue = outcome.resource["issue"][0]
    check("an unknown parameter is refused with an OperationOutcome",
          issue["code"] == "not-supported" and issue["details"]["coding"][0]["code"] == "UNKNOWN_SEARCH_PARAMETER")

doctor = SyncFHIRClient(BASE, authorization=f"Bearer {DOCTOR_FD2}")
own = doctor.resources("Appointment").search(date=today).fetch_all()
check("a doctor's key finds only its own doctor's appointments",
      own and all(p["actor"].get("reference") == "Practitioner/FD2"
                  for a in own for p in a["participant"] if p["actor"]["type"] == "Practitioner"))
try:
    doctor.resources("Slot").search(schedule="Schedule/FD1").fetch()
    check("a doctor's key is refused another doctor's slots", False)
except ForbiddenError:
    check("a doctor's key is refused another doctor's slots", True)

print(f"fhirpy searches: {passed} passed, 0 failed")
