// How an emulator worker paces v86's main loop: when it sleeps between slices and what
// wakes it. Plain JavaScript, loaded by v86Worker.mjs.

/**
 * Makes v86 sleep while its guest is halted. v86 sleeps until the guest's next timer
 * event, but hands any wait under a millisecond to `setImmediate`: a halted guest whose
 * next tick is 0.4 ms away is polled ~40 times in a row. Node's timers wake ~0.3 ms
 * early, so every 10 ms tick of an idle guest ended in such a spin: ~9,000 slices a
 * second, ~10 % of a core per idle sandbox (measured: docs/profiling.md, "What an idle
 * sandbox costs the host"). While the guest is halted this sleeps at least a millisecond
 * instead (a guest timer fires up to ~1 ms late); host input does not wait for it (see
 * `wake`). A running guest still goes on at once.
 *
 * The sleep is rounded up to whole milliseconds: Node's timers count whole milliseconds
 * from the event loop's last clock reading, so a 54.9 ms sleep often ended ~0.5 ms
 * before the guest's timer was due, and the slice found nothing to do but sleep again:
 * two wake-ups per timer interrupt of an idle guest instead of one.
 */
export const sleepWhileHalted = (v86) => {
  const cpu = v86.cpu
  v86.yield = (millis, tick) => {
    if (millis >= 1 || cpu.in_hlt[0]) setTimeout((tick) => v86.yield_callback(tick), Math.max(Math.ceil(millis), 1), tick)
    else setImmediate((tick) => v86.yield_callback(tick), tick)
  }
}

/**
 * Runs the emulator now if it is sleeping: after handing the guest input (which raises
 * an interrupt), so the guest takes it now rather than when v86 next wakes for a timer.
 * (`exec("true")` 20 ms after the last: p50 ~1.5 ms faster with it.) v86 ignores the
 * sleep's own wake-up once a newer one is scheduled.
 */
export const wake = (v86) => {
  if (v86?.idle && v86.running) v86.next_tick(0)
}
