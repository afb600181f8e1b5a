/**
 * Snapshots: the whole state of a running sandbox (memory, files written in it, running
 * kernel), taken with `box.snapshot()`, from which `V86Box.layer({ fromSnapshot })`
 * starts new sandboxes: forks. Each fork gets its own clock, entropy and hostname.
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"

/**
 * A snapshot: the bytes of a state file, and the file they were written to when
 * `box.snapshot(path)` was given one. `fromSnapshot` takes the snapshot itself or the
 * path of such a file; the bytes may be written anywhere and read back.
 *
 * @since 0.1.0
 * @category models
 */
export const Snapshot = Schema.TaggedStruct("Snapshot", {
  /** The state file's contents (tens of MB: the guest's used memory and its root disk). */
  bytes: Schema.Uint8ArrayFromSelf,
  /** Where `box.snapshot(path)` wrote them, atomically. */
  path: Schema.UndefinedOr(Schema.String)
})

/**
 * @since 0.1.0
 * @category models
 */
export type Snapshot = typeof Snapshot.Type

/**
 * Where `fromSnapshot` starts from: a `Snapshot`, or the path of a state file written by
 * `box.snapshot(path)`.
 *
 * @since 0.1.0
 * @category models
 */
export const SnapshotSource = Schema.Union(Snapshot, Schema.String.pipe(Schema.minLength(1)))

/**
 * @since 0.1.0
 * @category models
 */
export type SnapshotSource = typeof SnapshotSource.Type
