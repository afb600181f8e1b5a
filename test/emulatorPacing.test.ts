/**
 * How an emulator worker paces v86 (src/internal/emulatorPacing.mjs): a halted guest
 * whose next timer is under a millisecond away is not polled in a loop, a running guest
 * goes on at once, and input wakes a sleeping emulator without waiting for its timer.
 * The stand-in has v86's own scheduling (`next_tick`, `yield_callback`, a tick counter
 * that makes superseded wake-ups no-ops) around a slice that returns a fixed wait.
 */
import { describe, expect, it } from "@effect/vitest"
import { sleepWhileHalted, wake } from "../src/internal/emulatorPacing.mjs"

const standInEmulator = (options: { halted: boolean; waitMillis: number; laterWaitMillis?: number }) => {
  const v86 = {
    cpu: { in_hlt: Uint8Array.of(options.halted ? 1 : 0) },
    tick_counter: 0,
    idle: true,
    running: true,
    slices: 0,
    // v86's own wait in Node: under 1 ms, setImmediate.
    yield(millis: number, tick: number) {
      if (millis < 1) setImmediate((tick) => v86.yield_callback(tick), tick)
      else setTimeout((tick) => v86.yield_callback(tick), millis, tick)
    },
    next_tick(millis: number) {
      const tick = ++v86.tick_counter
      v86.idle = true
      v86.yield(millis, tick)
    },
    yield_callback(tick: number) {
      if (tick === v86.tick_counter) v86.do_tick()
    },
    do_tick() {
      if (!v86.running) return
      v86.idle = false
      v86.slices++
      v86.next_tick(v86.slices === 1 ? options.waitMillis : options.laterWaitMillis ?? options.waitMillis)
    }
  }
  return v86
}

const slicesIn = async (v86: ReturnType<typeof standInEmulator>, millis: number) => {
  v86.next_tick(0)
  await new Promise((resolve) => setTimeout(resolve, millis))
  v86.running = false
  return v86.slices
}

describe("emulator pacing", () => {
  it("a halted guest whose next timer is 0.3 ms away sleeps a millisecond at a time instead of being polled", async () => {
    const unpaced = await slicesIn(standInEmulator({ halted: true, waitMillis: 0.3 }), 100)
    const paced = standInEmulator({ halted: true, waitMillis: 0.3 })
    sleepWhileHalted(paced)
    const pacedSlices = await slicesIn(paced, 100)
    // v86's own wait spins (thousands of slices in 100 ms); a 1 ms sleep allows ~100.
    expect(unpaced).toBeGreaterThan(1000)
    expect(pacedSlices).toBeGreaterThan(5)
    expect(pacedSlices).toBeLessThanOrEqual(110)
  })

  it("a halted guest sleeps until its timer is due, not a little less and then once more", async () => {
    // A guest timer every 5.5 ms, as the kernel's clock event fires in an idle guest: a
    // slice before the deadline finds it not yet due and sleeps again (Node's timers can
    // fire up to a millisecond early when the wait has a fraction).
    const periodMillis = 5.5
    let deadline = performance.now() + periodMillis
    let fired = 0
    const v86 = standInEmulator({ halted: true, waitMillis: 0 })
    v86.do_tick = () => {
      if (!v86.running) return
      v86.idle = false
      v86.slices++
      if (performance.now() >= deadline) {
        fired++
        deadline += periodMillis
      }
      v86.next_tick(Math.max(deadline - performance.now(), 0))
    }
    sleepWhileHalted(v86)
    await slicesIn(v86, 300)
    expect(fired).toBeGreaterThan(20)
    // One slice per timer (a few more allowed: a busy host delays a timer past the next).
    expect(v86.slices).toBeLessThanOrEqual(fired * 1.2)
  })

  it("a running guest goes on at once", async () => {
    const running = standInEmulator({ halted: false, waitMillis: 0 })
    sleepWhileHalted(running)
    expect(await slicesIn(running, 100)).toBeGreaterThan(1000)
  })

  it("input wakes a sleeping emulator at once, and the timer it slept on no longer runs a slice", async () => {
    const v86 = standInEmulator({ halted: true, waitMillis: 100, laterWaitMillis: 1000 })
    sleepWhileHalted(v86)
    v86.next_tick(0)
    await new Promise((resolve) => setTimeout(resolve, 20))
    expect(v86.slices).toBe(1) // asleep until its timer, 100 ms away
    wake(v86)
    await new Promise((resolve) => setTimeout(resolve, 20))
    expect(v86.slices).toBe(2)
    // The first sleep's timer fired at ~100 ms and was ignored; the next sleep ends at ~1 s.
    await new Promise((resolve) => setTimeout(resolve, 150))
    expect(v86.slices).toBe(2)
    v86.running = false
  })

  it("waking a stopped or running emulator does nothing", async () => {
    const stopped = standInEmulator({ halted: true, waitMillis: 200 })
    stopped.running = false
    wake(stopped)
    const busy = standInEmulator({ halted: true, waitMillis: 200 })
    busy.idle = false
    wake(busy)
    wake(undefined)
    await new Promise((resolve) => setTimeout(resolve, 20))
    expect(stopped.slices + busy.slices).toBe(0)
  })
})
