/**
 * The exit code v86box leaves with: a command's own, or one that says what went wrong.
 * Handlers set it instead of returning it because `@effect/cli` handlers return void.
 */
import * as Effect from "effect/Effect"

export const exitCodes = {
  /** The sandbox could not do what was asked: boot, assets, emulator failure. */
  failure: 1,
  /** The command line was wrong (as `@effect/cli` does for a bad option). */
  usage: 2,
  /** The command ran past `--timeout`, as coreutils' `timeout` reports it. */
  timeout: 124,
  /** Interrupted (Ctrl-C): 128 + SIGINT. */
  interrupted: 130,
  /** The host's stdout or stderr closed: 128 + SIGPIPE. */
  brokenPipe: 141
} as const

export const setExitCode = (code: number): Effect.Effect<void> => Effect.sync(() => { process.exitCode = code })
