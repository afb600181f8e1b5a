// Changing V8's flags from threads of one process. Plain JavaScript: the emulator workers
// and the guest-code compiler threads import it.
//
// V8's flags are process-wide, and the SDK's threads change some for a moment: a compiler
// thread asks for TurboFan while it compiles (guestCodeCompilerThread.mjs), an emulator
// thread exposes `gc` while it makes the context that hands it over (`exposedGc`). Two
// threads doing that at once undo each other's change: with 4 emulator workers started
// together, one found `gc` already hidden again by another and crashed on start (its
// sandbox booted cold, and the warm-start state it could not resume was deleted). So every
// change is made holding a lock in memory the threads share.
import { setFlagsFromString } from "node:v8"
import { runInNewContext } from "node:vm"

/**
 * Runs `change` holding the lock in `cells[index]` (an Int32Array over shared memory,
 * zeroed). A thread that ended while holding it (a crash) would hold it forever: after a
 * second of waiting the lock is taken anyway.
 */
export const withFlagsLock = (cells, index, change) => {
  const giveUpAt = Date.now() + 1000
  while (Atomics.compareExchange(cells, index, 0, 1) !== 0 && Date.now() < giveUpAt) Atomics.wait(cells, index, 1, 1)
  Atomics.store(cells, index, 1)
  try {
    return change()
  } finally {
    Atomics.store(cells, index, 0)
    Atomics.notify(cells, index, 1)
  }
}

/**
 * V8's full garbage collection for this thread, or undefined if it cannot be had. With
 * `node --expose-gc` it is there already (and the flag stays as the process set it);
 * otherwise `--expose-gc` is on only while a new context is made, under the lock.
 */
export const exposedGc = (cells, index) => {
  if (typeof globalThis.gc === "function") return globalThis.gc
  return withFlagsLock(cells, index, () => {
    setFlagsFromString("--expose-gc")
    try {
      return runInNewContext("typeof gc === 'function' ? gc : undefined")
    } finally {
      setFlagsFromString("--no-expose-gc")
    }
  })
}
