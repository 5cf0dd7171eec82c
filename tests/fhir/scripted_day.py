"""scripted_day.py BASE_URL ADMIN_KEY VIEWER_KEY DOCTOR_KEY OUT.json

Plays an OPD day against a running OPD Token Engine through its own API
(as the front desk and the doctors would), so that tokens end in every
status, then reads every FHIR resource the server serves for that day
(the capability statement, every Schedule, Slot and Appointment, each
search page, and the errors as OperationOutcomes) and writes them to
OUT.json for validate.js. Exits non-zero when the API answers otherwise
than the day expects.

The doctor key must be the key of doctor FD2 (it is used to check that a
doctor's key is refused another doctor's resources).
"""

import json
import sys

import requests

BASE, ADMIN, VIEWER, DOCTOR_FD2, OUT = sys.argv[1:6]
SESSION = requests.Session()


def call(method, path, key, body=None, expect=(200,)):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = SESSION.request(method, BASE + path, json=body, headers=headers, timeout=30)
    if response.status_code not in expect:
        sys.exit(f"scripted_day.py: {method} {path} answered {response.status_code}: {response.text}")
    return response


def slot(slot_id, doctor, start, end, capacity):
    call("POST", "/slots", ADMIN, {"slotId": slot_id, "doctorId": doctor, "startTime": start,
                                   "endTime": end, "capacity": capacity}, expect=(201,))


def book(patient, slot_id, source):
    answer = call("POST", "/tokens", ADMIN, {"patientId": patient, "slotId": slot_id, "source": source},
                  expect=(201,)).json()
    return answer["token"]["tokenId"]


def act(token, *actions):
    for action in actions:
        call("POST", f"/tokens/{token}/{action}", ADMIN)
    return token


# The day: two doctors' slots, one slot that closes, and ids with '.' and
# '_' (whose FHIR ids are escaped).
slot("FHIR-A", "FD1", "09:00", "10:00", 3)
slot("FHIR-B", "FD1", "10:00", "11:00", 1)
slot("FHIR-C", "FD2", "09:00", "10:00", 2)
slot("fhir_d.09", "F.D_3", "09:00", "10:00", 1)

tokens = {
    "completed": act(book("P1", "FHIR-A", "ONLINE"), "check-in", "call", "start", "complete"),
    "skipped": act(book("P2", "FHIR-A", "PAID"), "check-in", "call", "skip"),
    "bumped in the hall": act(book("P3", "FHIR-A", "WALK_IN"), "check-in"),
    "overbooked emergency": book("P4", "FHIR-A", "EMERGENCY"),
}
# A follow-up into the full slot bumps the walk-in, who had checked in.
tokens["bumper"] = book("P5", "FHIR-A", "FOLLOW_UP")
tokens["waitlisted"] = book("P6", "FHIR-A", "ONLINE")
tokens["cancelled"] = act(book("P7", "FHIR-A", "ONLINE"), "cancel")
tokens["in consultation"] = act(tokens["overbooked emergency"], "check-in", "call", "start")
tokens["no-show"] = act(book("Q1", "FHIR-B", "ONLINE"), "no-show")
tokens["allocated, then no-show at closing"] = book("Q2", "FHIR-B", "WALK_IN")
tokens["expired at closing"] = book("Q3", "FHIR-B", "WALK_IN")
call("POST", "/slots/FHIR-B/close", ADMIN)
tokens["called"] = act(book("R1", "FHIR-C", "ONLINE"), "check-in", "call")
tokens["checked in"] = act(book("R2", "FHIR-C", "FOLLOW_UP"), "check-in")
tokens["escaped ids"] = book("S1", "fhir_d.09", "ONLINE")

statuses = {name: call("GET", f"/tokens/{token}", VIEWER).json()["status"] for name, token in tokens.items()}
expected = {"COMPLETED", "SKIPPED", "WAITLISTED", "IN_CONSULTATION", "ALLOCATED", "CANCELLED",
            "NO_SHOW", "EXPIRED", "CALLED", "CHECKED_IN"}
missing = expected - set(statuses.values())
if missing:
    sys.exit(f"scripted_day.py: the day left no token {sorted(missing)}: {statuses}")

served = []


def fhir(path, key=VIEWER, expect=(200,), method="GET", what=None):
    response = call(method, "/fhir" + path, key, expect=expect)
    if response.headers.get("content-type") != "application/fhir+json":
        sys.exit(f"scripted_day.py: {path} answered {response.headers.get('content-type')}")
    body = response.json()
    served.append({"what": what or f"{method} /fhir{path} ({response.status_code})", "resource": body})
    return body


def every_page(path):
    """Every resource of a search, page by page along the next links."""
    found = []
    while path:
        bundle = fhir(path)
        found += [entry["resource"] for entry in bundle.get("entry", [])]
        following = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        path = following[0].split("/fhir", 1)[1] if following else None
    return found


fhir("/metadata", key=None)
for schedule in every_page("/Schedule?_count=2"):
    fhir(f"/Schedule/{schedule['id']}")
for found in every_page("/Slot?_count=4"):
    fhir(f"/Slot/{found['id']}")
every_page("/Appointment?_count=3")
for name, token in tokens.items():
    fhir(f"/Appointment/{token}", what=f"the {name} token ({statuses[name]})")
every_page("/Appointment?practitioner=Practitioner/FD1&status=arrived,fulfilled,booked")
every_page("/Slot?schedule=Schedule/F..D.-3")

# Errors, each an OperationOutcome.
fhir("/Slot/no-such-slot", expect=(404,))
fhir("/Appointment?colour=blue", expect=(400,))
fhir("/Slot?start=2030-02-30", expect=(400,))
fhir("/Slot?_format=xml", expect=(406,))
fhir("/Slot", key=None, expect=(401,))
fhir("/Slot/FHIR-A", key=DOCTOR_FD2, expect=(403,))
fhir("/Slot", method="POST", expect=(405,))
fhir("/Patient/P1", expect=(404,))

with open(OUT, "w", encoding="utf-8") as out:
    json.dump(served, out)
print(f"scripted_day.py: tokens in {len(set(statuses.values()))} statuses; {len(served)} FHIR answers written to {OUT}")
