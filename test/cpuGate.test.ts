/**
 * The turns at the CPU that emulator workers take (src/internal/cpuGate.mjs): never more
 * runners than permits when they all stay busy, everyone gets turns, a short burst runs
 * at once, and a turn never handed on (its worker gone) does not stop the others.
 */
import { describe, expect, it } from "@effect/vitest"
import { Worker } from "node:worker_threads"
import { cpuGate } from "../src/internal/cpuGate.mjs"

const gateUrl = new URL("../src/internal/cpuGate.mjs", import.meta.url).href

/**
 * `threads` workers each run `slices` busy slices of ~1 ms through one gate, counting in
 * shared memory how many are inside a slice at once. Resolves with the highest count seen
 * and each worker's longest wait for a turn.
 */
const runBusyWorkers = async (threads: number, options: { permits: number; turnMillis: number }) => {
  const memory = new SharedArrayBuffer(8)
  const inside = new SharedArrayBuffer(8) // [now inside, most ever inside]
  const source = `
    const { workerData, parentPort } = require("node:worker_threads")
    import(workerData.gateUrl).then(({ cpuGate }) => {
      const gate = cpuGate(workerData.memory, workerData.options)
      const inside = new Int32Array(workerData.inside)
      let longestWait = 0
      for (let slice = 0; slice < 120; slice++) {
        const asked = performance.now()
        gate.enter()
        longestWait = Math.max(longestWait, performance.now() - asked)
        const now = Atomics.add(inside, 0, 1) + 1
        for (let most = Atomics.load(inside, 1); now > most; most = Atomics.load(inside, 1)) Atomics.compareExchange(inside, 1, most, now)
        const end = performance.now() + 1
        while (performance.now() < end) {}
        Atomics.sub(inside, 0, 1)
      }
      gate.leave()
      parentPort.postMessage(longestWait)
    })`
  const waits = await Promise.all(
    Array.from({ length: threads }, () =>
      new Promise<number>((resolve, reject) => {
        const worker = new Worker(source, {
          eval: true,
          workerData: { gateUrl, memory, inside, options: { ...options, graceMillis: 0, stallMillis: 10_000 } }
        })
        worker.once("message", (wait: number) => void worker.terminate().then(() => resolve(wait)))
        worker.once("error", reject)
      })
    )
  )
  return { mostInside: new Int32Array(inside)[1]!, waits }
}

describe("cpuGate", () => {
  it("lets at most `permits` busy emulators run at once, and each gets its turns", async () => {
    const { mostInside, waits } = await runBusyWorkers(4, { permits: 2, turnMillis: 10 })
    expect(mostInside).toBe(2)
    // FIFO turns of 10 ms: a waiter is let in after a turn or two, never starved.
    for (const wait of waits) expect(wait).toBeLessThan(2_000)
  })

  it("does not hold anyone back while there are no more busy emulators than permits", async () => {
    const { mostInside } = await runBusyWorkers(2, { permits: 2, turnMillis: 10 })
    expect(mostInside).toBe(2)
  })

  it("lets a guest that just woke run its short burst without a turn", () => {
    const memory = new SharedArrayBuffer(8)
    const options = { permits: 1, turnMillis: 100, graceMillis: 60_000, stallMillis: 60_000 }
    const busy = cpuGate(memory, { ...options, graceMillis: 0 })
    busy.enter() // takes the only turn
    const waking = cpuGate(memory, options)
    const asked = performance.now()
    waking.enter()
    expect(performance.now() - asked).toBeLessThan(50)
    busy.leave()
  })

  it("goes ahead when a turn is never handed on (its worker ended), and keeps working after", () => {
    const memory = new SharedArrayBuffer(8)
    const options = { permits: 1, turnMillis: 5, graceMillis: 0, stallMillis: 100 }
    cpuGate(memory, options).enter() // a holder that never leaves
    const survivor = cpuGate(memory, options)
    const asked = performance.now()
    survivor.enter()
    const waited = performance.now() - asked
    expect(waited).toBeGreaterThanOrEqual(95)
    expect(waited).toBeLessThan(1_000)
    // The stuck turn was counted as done: handing on and taking turns again needs no wait.
    survivor.leave()
    const again = performance.now()
    survivor.enter()
    expect(performance.now() - again).toBeLessThan(50)
  })
})
