/**
 * The Machine: the lowest seam of v86box. A console byte stream in each direction (to
 * and from the guest agent on the virtio console's port 0) plus what the layers above
 * need to report failures and to snapshot. Everything above it runs the same whether the
 * bytes come from a live v86 emulator or from a recorded transcript (testkit/).
 */
import type * as Effect from "effect/Effect"
import type { MachineError } from "../Errors.ts"

export interface Machine {
  /** The next bytes the guest agent wrote, in order; waits for them. Fails once the machine died or stopped. */
  readonly receive: Effect.Effect<Uint8Array, MachineError>
  /** Hands bytes to the guest agent, in order. Never drops them: a full guest makes them wait. */
  readonly send: (bytes: Uint8Array) => Effect.Effect<void, MachineError>
  /** The end of the kernel log (ttyS0), for error messages. */
  readonly kernelLogTail: Effect.Effect<string>
  /** The emulator's full state, restorable with `initialState`. */
  readonly saveState: Effect.Effect<Uint8Array, MachineError>
}

/**
 * The last bytes of a console as text: bounded, so a chatty guest cannot grow it,
 * and enough to show why a boot or a command failed.
 */
export class ConsoleTail {
  private text = ""

  constructor(private readonly maxChars = 8192) {}

  append(chunk: string): void {
    this.text += chunk
    if (this.text.length > this.maxChars * 2) this.text = this.text.slice(-this.maxChars)
  }

  /** The latest `chars` characters (all kept ones by default). */
  tail(chars = this.maxChars): string {
    return this.text.slice(-chars)
  }
}

/**
 * Lines on the kernel console after which the guest cannot answer any more: the machine
 * is reported dead at once instead of waiting for a timeout.
 */
const fatalKernelMessages: ReadonlyArray<readonly [pattern: string, reason: string]> = [
  ["Kernel panic - not syncing", "the guest kernel panicked"],
  ["v86box-agent: agent exited", "the guest agent exited"],
  ["reboot: Power down", "the guest powered off"],
  ["reboot: System halted", "the guest halted"],
  ["reboot: Restarting system", "the guest rebooted"]
]

/** The reason the machine is dead, if this kernel log text says it is. */
export const fatalKernelMessage = (text: string): string | undefined =>
  fatalKernelMessages.find(([pattern]) => text.includes(pattern))?.[1]
