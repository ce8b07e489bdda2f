// The records every client produces and reads: the same keys, values and partitions for all, so
// the clients differ only in themselves. Plain JavaScript (no tsx) so Node 20 and Node 24 run it
// as is. A value is a rollout-like JSON object of exactly VALUE_BYTES bytes carrying its index
// `i`, which lets the verifier check that an output topic holds each input record exactly once.

export const VALUE_BYTES = 345;

const WORDS = 'the model answered a question about kafka transactions and offsets while the grader scored its reasoning step by step'.split(' ');

/** Record `i` of a run: key `k<i>`, partition `i % partitions`, a VALUE_BYTES-byte JSON value. */
export function record(i, partitions) {
  const head = `{"i":${i},"id":"rollout-${i}","model":"policy-v3","reward":${((i * 7919) % 1000) / 1000},"text":"`;
  let text = '';
  for (let w = i; head.length + text.length + 2 < VALUE_BYTES; w++) text += WORDS[w % WORDS.length] + ' ';
  const value = Buffer.from(head + text.slice(0, VALUE_BYTES - head.length - 2) + '"}');
  return { key: Buffer.from(`k${i}`), value, partition: i % partitions };
}

/** The index a value carries (the verifier's view of "which record is this"). */
export function indexOf(value) {
  return Number(/^\{"i":(\d+),/.exec(value.toString('latin1'))[1]);
}
