/**
 * A command running in the guest, as `V86Box.start` returns it: streams of its output,
 * a sink for its input, its exit, and a way to signal it. Modelled on
 * `@effect/platform`'s `CommandExecutor.Process`.
 *
 * @since 0.1.0
 */
import type * as Effect from "effect/Effect"
import type * as Sink from "effect/Sink"
import type * as Stream from "effect/Stream"
import type { CommandTimeout, MachineError, OutputLimitExceeded } from "./Errors.ts"

/**
 * Signals a command can be sent.
 *
 * @since 0.1.0
 * @category models
 */
export type Signal = "SIGTERM" | "SIGKILL" | "SIGINT" | "SIGHUP" | "SIGQUIT" | "SIGUSR1" | "SIGUSR2" | "SIGSTOP" | "SIGCONT"

/**
 * The errors of a running command: the machine failed, or the command was killed for
 * running too long or writing too much.
 *
 * @since 0.1.0
 * @category errors
 */
export type ProcessError = CommandTimeout | OutputLimitExceeded | MachineError

/**
 * How a command ended. `signal` is set when a signal killed it; `exitCode` is then
 * 128 + the signal's number, as in a shell.
 *
 * @since 0.1.0
 * @category models
 */
export interface ExitStatus {
  readonly exitCode: number
  readonly signal?: string | undefined
}

/**
 * The result of `V86Box.exec`: output decoded as UTF-8 (invalid bytes become U+FFFD).
 * A non-zero exit code is a result, not an error.
 *
 * @since 0.1.0
 * @category models
 */
export interface ExecResult extends ExitStatus {
  readonly stdout: string
  readonly stderr: string
}

/**
 * A running command. Its output streams end when the command ends; `exit` (and
 * `exitCode`) fail with `CommandTimeout` or `OutputLimitExceeded` when the sandbox killed it.
 * Output nobody reads holds the command back (it blocks writing) instead of piling up.
 *
 * @since 0.1.0
 * @category models
 */
export interface Process {
  readonly stdout: Stream.Stream<Uint8Array, MachineError>
  readonly stderr: Stream.Stream<Uint8Array, MachineError>
  readonly exit: Effect.Effect<ExitStatus, ProcessError>
  readonly exitCode: Effect.Effect<number, ProcessError>
  /** Feeds the command's stdin (start it with `stdin: "pipe"`); when the stream ends, stdin is closed (EOF). */
  readonly stdin: Sink.Sink<void, Uint8Array, never, MachineError>
  /** Sends a signal (default SIGTERM) to the command's whole process group. */
  readonly kill: (signal?: Signal) => Effect.Effect<void, MachineError>
}

/** @internal */
export const signalNumbers: Record<Signal, number> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGKILL: 9,
  SIGUSR1: 10,
  SIGUSR2: 12,
  SIGTERM: 15,
  SIGCONT: 18,
  SIGSTOP: 19
}

const linuxSignalNames: Record<number, string> = {
  1: "SIGHUP",
  2: "SIGINT",
  3: "SIGQUIT",
  4: "SIGILL",
  5: "SIGTRAP",
  6: "SIGABRT",
  7: "SIGBUS",
  8: "SIGFPE",
  9: "SIGKILL",
  10: "SIGUSR1",
  11: "SIGSEGV",
  12: "SIGUSR2",
  13: "SIGPIPE",
  14: "SIGALRM",
  15: "SIGTERM",
  17: "SIGCHLD",
  18: "SIGCONT",
  19: "SIGSTOP",
  20: "SIGTSTP",
  24: "SIGXCPU",
  25: "SIGXFSZ"
}

/** @internal */
export const signalName = (signal: number): string => linuxSignalNames[signal] ?? `SIG${signal}`
