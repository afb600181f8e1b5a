/**
 * Records a live machine: every byte each way and the kernel log, with relative times
 * and a gloss of the protocol frames for reviewers.
 */
import * as Effect from "effect/Effect"
import type { Machine } from "../../src/internal/machine.ts"
import { FrameDecoder } from "../../src/internal/protocol.ts"
import { type Event, glossFrames } from "../Transcript.ts"

export class Recorder {
  readonly events: Array<Event> = []
  private lastEventAt = performance.now()
  private readonly toGuest = new FrameDecoder()
  private readonly fromGuest = new FrameDecoder({ skipNoise: true })
  private failed = false
  private stopped = false

  /** Nothing more is recorded: the test is over and the machine is about to shut down. */
  stop(): void {
    this.stopped = true
  }

  private elapsed(): number {
    const now = performance.now()
    const t = Math.round((now - this.lastEventAt) * 10) / 10
    this.lastEventAt = now
    return t
  }

  log(bytes: Uint8Array): void {
    if (this.stopped) return
    this.events.push({ t: this.elapsed(), d: "log", data: bytes.slice() })
  }

  mark(label: string): void {
    this.events.push({ t: this.elapsed(), d: "mark", label })
  }

  private traffic(d: "to" | "from", bytes: Uint8Array): void {
    if (this.stopped) return
    const frames = glossFrames(d === "to" ? this.toGuest : this.fromGuest, bytes)
    this.events.push({ t: this.elapsed(), d, data: bytes.slice(), frames })
    if (d === "from" && frames.some((frame) => frame.startsWith("READY#"))) {
      this.fromGuest.skipNoise = false
      this.mark("boot: the agent is ready")
    }
  }

  /** The live machine, with everything that crosses it written down. */
  wrap(machine: Machine): Machine {
    return {
      receive: machine.receive.pipe(
        Effect.tap((bytes) => this.traffic("from", bytes)),
        Effect.tapError((error) =>
          Effect.sync(() => {
            if (this.failed || this.stopped) return
            this.failed = true
            this.events.push({ t: this.elapsed(), d: "fail", reason: error.reason })
          })
        )
      ),
      send: (bytes) => Effect.zipRight(Effect.sync(() => this.traffic("to", bytes)), machine.send(bytes)),
      kernelLogTail: machine.kernelLogTail,
      saveState: machine.saveState
    }
  }
}
