/**
 * The guest's filesystem as an `@effect/platform` `FileSystem`: code written against
 * `FileSystem.FileSystem` reads and writes files inside the sandbox.
 *
 * ```ts
 * const fs = yield* FileSystem.FileSystem
 * yield* fs.writeFileString("/tmp/in.txt", "hello\n")
 * const bytes = yield* fs.readFile("/tmp/in.txt")
 * ```
 *
 * Each operation runs one short coreutils script in the guest (`cat`, `stat`, `mkdir`,
 * `mv`…). File contents travel as raw bytes over the command's stdin and stdout, so
 * `readFile` and `writeFile` are binary-safe. A failure is a `SystemError` whose reason
 * (`NotFound`, `PermissionDenied`, `AlreadyExists`, `BadResource`, …) comes from the errno
 * the guest met, with the method and the path, and the guest's message (prefixed by the
 * errno's name) as its description. A failure of the sandbox itself is a `SystemError` too:
 * `TimedOut` when a `commandTimeout` fired, `Unknown` when the machine failed (the cause is
 * the sandbox's error).
 *
 * Relative paths are relative to the home of the user the operations run as. `stream`
 * emits the chunks as the guest sends them (`chunkSize` and `bufferSize` are ignored).
 * An `open`ed file keeps its path and position on the host: each read or write is one
 * guest command. Not supported: `watch` (fails with `Unknown`).
 *
 * @since 0.1.0
 * @module
 */
import * as FileSystem from "@effect/platform/FileSystem"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as internal from "./internal/guestFileSystem.ts"
import type { User } from "./Options.ts"
import { V86Box } from "./V86Box.ts"

/**
 * Options of `make`.
 *
 * @since 0.1.0
 * @category models
 */
export interface GuestFileSystemOptions {
  /**
   * Who performs the operations: `"root"` (default), `"user"` (uid 1000) or a uid. Files
   * are created as this user, and the guest checks permissions for it.
   */
  readonly user?: User | undefined
}

/**
 * The guest filesystem of a sandbox, as a `FileSystem`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: (
  box: Pick<V86Box.Service, "exec" | "start">,
  options?: GuestFileSystemOptions
) => FileSystem.FileSystem = internal.make

/**
 * Provides `FileSystem.FileSystem` as the guest filesystem of the `V86Box` in context,
 * operating as root.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<FileSystem.FileSystem, never, V86Box> = Layer.effect(
  FileSystem.FileSystem,
  Effect.map(V86Box, (box) => box.fs)
)
