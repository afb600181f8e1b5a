/**
 * Runs a guest command with its stdout and stderr streamed to the host's, chunk by
 * chunk as they arrive, and hands back its exit code.
 */
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import type { ExecOptions } from "../Options.ts"
import type { V86Box } from "../V86Box.ts"

/**
 * The host's stdout or stderr closed under us (e.g. `v86box exec -- yes | head -1`).
 * The command is killed and v86box exits as a shell would after SIGPIPE.
 */
export class HostOutputClosed extends Schema.TaggedError<HostOutputClosed>()("HostOutputClosed", {
  stream: Schema.String
}) {}

/**
 * Writes one chunk and waits until it is handed to the OS: a host reader that is slow
 * slows the guest command down instead of filling this process's memory.
 */
const writeTo = (name: "stdout" | "stderr", out: NodeJS.WriteStream) => (chunk: Uint8Array) =>
  Effect.async<void, HostOutputClosed>((resume) => {
    out.write(chunk, (error) => resume(error ? Effect.fail(new HostOutputClosed({ stream: name })) : Effect.void))
  })

/** A broken pipe is reported through the write callback; without a listener Node would also throw it. */
const ignoreStreamErrors = Effect.sync(() => {
  for (const out of [process.stdout, process.stderr]) out.on("error", () => {})
}).pipe(Effect.cached, Effect.runSync)

/** The host's stdin as a stream of bytes, for `--stdin` (opened only when the command starts reading it). */
export const hostStdin: Stream.Stream<Uint8Array, Error> = Stream.suspend(() =>
  Stream.fromAsyncIterable(
    process.stdin as AsyncIterable<Uint8Array>,
    (error) => error instanceof Error ? error : new Error(String(error))
  )
)

export const runStreamed = (box: V86Box.Service, command: string, options?: ExecOptions) =>
  Effect.gen(function*() {
    yield* ignoreStreamErrors
    const guestProcess = yield* box.start(command, options)
    const forwarding = yield* Effect.fork(Effect.all([
      Stream.runForEach(guestProcess.stdout, writeTo("stdout", process.stdout)),
      Stream.runForEach(guestProcess.stderr, writeTo("stderr", process.stderr))
    ], { concurrency: "unbounded", discard: true }))
    // A command killed for its timeout still printed something: forward all of it
    // (its streams end with it) before reporting the timeout.
    const exit = yield* Effect.either(guestProcess.exit)
    yield* Fiber.join(forwarding)
    return (yield* exit).exitCode
  }).pipe(Effect.scoped)
