import { describe, expect, it } from 'vitest';
import { AdmissionGate } from '../src/grpc/admission.js';

/** Enters `n` callers; returns the order in which they were admitted (as their promises settle). */
async function admitOrder(gate: AdmissionGate, n: number): Promise<{ order: number[]; pending: number[] }> {
  const order: number[] = [];
  const pending: number[] = [];
  for (let i = 0; i < n; i++) {
    const turn = gate.enter();
    if (turn === undefined) order.push(i);
    else {
      pending.push(i);
      void turn.then(() => order.push(i));
    }
  }
  return { order, pending };
}

describe('AdmissionGate', () => {
  it.each([
    { limit: 1, callers: 5 },
    { limit: 3, callers: 10 },
    { limit: 8, callers: 4 },
  ])('admits $limit at once of $callers and the rest in arrival order', async ({ limit, callers }) => {
    const gate = new AdmissionGate(limit);
    const { order, pending } = await admitOrder(gate, callers);
    const immediate = Math.min(limit, callers);
    expect(order).toEqual(Array.from({ length: immediate }, (_, i) => i));
    expect([gate.active, gate.queued]).toEqual([immediate, callers - immediate]);
    for (let done = 0; done < callers; done++) {
      gate.release();
      await Promise.resolve();
      expect(gate.active).toBe(Math.min(limit, callers - done - 1));
    }
    expect(order).toEqual(Array.from({ length: callers }, (_, i) => i));
    expect(pending).toEqual(Array.from({ length: callers - immediate }, (_, i) => immediate + i));
    expect([gate.active, gate.queued]).toEqual([0, 0]);
  });

  it('passes a released slot to the longest-waiting caller, not to a newcomer', async () => {
    const gate = new AdmissionGate(1);
    expect(gate.enter()).toBeUndefined();
    const second = gate.enter();
    expect(second).toBeInstanceOf(Promise);
    gate.release(); // the slot passes to the queued caller, not to whoever comes next
    expect([gate.active, gate.queued]).toEqual([1, 0]);
    await second;
    expect(gate.enter()).toBeInstanceOf(Promise);
  });

  it.each([0, -1, 1.5, Number.NaN])('refuses the limit %s', (limit) => {
    expect(() => new AdmissionGate(limit)).toThrow(RangeError);
  });
});
