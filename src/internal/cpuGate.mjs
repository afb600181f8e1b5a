// At most one running emulator per core. Plain JavaScript: the emulator's worker imports it.
//
// Why: an emulator works through megabytes of its own state (compiled guest code, v86's
// tables, guest memory) every millisecond. With more emulator threads than cores, the
// kernel switches between them every few milliseconds and each one finds the caches full
// of another's data: 4 busy sandboxes on 2 cores ran ~100 M emulated instructions per
// second each, 400 in all, where 1 alone ran 270 and 2 at once ~250 each. Taking turns
// of ~100 ms instead, at most one emulator per core at a time, keeps each one's data in
// the caches for most of its turn (docs/profiling.md: shorter turns gained nothing).
//
// The gate is a ticket queue in memory shared by all the workers of the process (made by
// v86Machine.ts): a worker takes a ticket when its emulator has work, runs once fewer
// than `permits` tickets ahead of it are still out, and hands its turn on after
// `turnMillis` if someone waits, or when the guest goes idle (halts) or stops. A worker
// that ends while holding a turn (terminated, crashed) cannot hand it on, so a waiter that
// sees no turn end for `stallMillis` counts that turn as done: the gate can lose some of
// its effect, never stop a machine.

const NEXT_TICKET = 0
const TURNS_DONE = 1

/**
 * @param {SharedArrayBuffer} memory two Int32 cells, zeroed, shared by the workers
 * @param {{ permits: number, turnMillis: number, graceMillis: number, stallMillis: number }} options
 */
export const cpuGate = (memory, { permits, turnMillis, graceMillis, stallMillis }) => {
  const cells = new Int32Array(memory)
  let holding = false
  let turnStart = 0
  /** When the guest last started running after a halt: a short burst needs no turn. */
  let busySince

  /** Tickets taken and not yet handed on: the runners, plus the waiters beyond `permits`. */
  const outstanding = () => (Atomics.load(cells, NEXT_TICKET) - Atomics.load(cells, TURNS_DONE)) | 0

  const takeTurn = () => {
    const ticket = Atomics.add(cells, NEXT_TICKET, 1)
    let done = Atomics.load(cells, TURNS_DONE)
    let lastProgress = performance.now()
    while (((ticket - done) | 0) >= permits) {
      Atomics.wait(cells, TURNS_DONE, done, stallMillis)
      const now = performance.now()
      const seen = Atomics.load(cells, TURNS_DONE)
      if (seen !== done) {
        done = seen
        lastProgress = now
      } else if (now - lastProgress >= stallMillis) {
        // The turn ahead was never handed on: count it as done, for this waiter and
        // every later one (were its holder only slow, one more emulator runs than permits).
        done = Atomics.add(cells, TURNS_DONE, 1) + 1
        Atomics.notify(cells, TURNS_DONE)
        lastProgress = now
      }
    }
    holding = true
    turnStart = performance.now()
  }

  const handOn = () => {
    if (!holding) return
    holding = false
    Atomics.add(cells, TURNS_DONE, 1)
    Atomics.notify(cells, TURNS_DONE)
  }

  return {
    /** Before the emulator runs a slice: waits for a turn unless it holds one that is not over. */
    enter() {
      const now = performance.now()
      if (holding) {
        if (now - turnStart < turnMillis) return
        // Turn over: keep running if no one waits, else go to the back of the queue.
        if (outstanding() <= permits) {
          turnStart = now
          return
        }
        handOn()
      } else {
        busySince ??= now
        if (now - busySince < graceMillis) return
      }
      takeTurn()
    },
    /** The emulator has nothing to run (the guest halted, or the machine stopped). */
    leave() {
      busySince = undefined
      handOn()
    }
  }
}
