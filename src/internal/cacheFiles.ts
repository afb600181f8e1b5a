/**
 * Housekeeping of what the SDK writes into `assetsDir`: warm-start states (`states/`,
 * ~20 MB each) and unpacked root disks (`disks/`, ~40 MB each). Each new guest image,
 * memory size or v86 version writes new ones and never reads the old ones again, so
 * without pruning they pile up (a developer machine had 669 MB of states).
 *
 * A file's last use is its access time, set by the SDK whenever it resumes a state or
 * opens a disk (the modification time is kept, to the millisecond: the asset memos and
 * the standby key on it). When
 * the SDK adds a file to such a dir, it removes the files there that were not used in
 * the last hour, except the `keep` used most recently, and leftovers of interrupted
 * writes (`*.partial`). The hour protects a process that has just picked a file and
 * not yet opened it; a file already open stays readable after removal (POSIX), and a
 * removed state or disk is only rebuilt (a cold boot, an unpack) when asked for again.
 */
import * as Effect from "effect/Effect"
import { readdir, rm, stat, utimes } from "node:fs/promises"
import { join } from "node:path"

/** Files used this recently are never removed. */
const RECENT_USE_MILLIS = 60 * 60 * 1000

/**
 * Records that the file at `path` was used now (its access time); errors are ignored.
 * Node sets both times at once: the modification time is set again to what it was, to
 * the millisecond (finer digits are lost; the memos and standby.ts compare milliseconds).
 */
export const markUsed = (path: string): Effect.Effect<void> =>
  Effect.promise(async () => {
    try {
      const { mtime } = await stat(path)
      await utimes(path, new Date(), mtime)
    } catch {
      // A file that cannot be touched is only pruned sooner.
    }
  })

export interface PruneOptions {
  /** The names of the SDK's files (and their `.partial` leftovers): nothing else is touched. */
  readonly names: RegExp
  /** How many of the most recently used files stay, however old. */
  readonly keep: number
  /** Never removed (the file just written). */
  readonly except: string
}

/**
 * Removes the files of `dir` named like `names` not used in the last hour, but the `keep`
 * most recently used and `except`; returns the names removed. Never fails (a file another
 * process removed first, an unreadable dir: nothing to do).
 */
export const prune = (dir: string, options: PruneOptions): Effect.Effect<ReadonlyArray<string>> =>
  Effect.promise(async () => {
    const now = Date.now()
    let names: Array<string>
    try {
      names = await readdir(dir)
    } catch {
      return []
    }
    const files: Array<{ name: string; path: string; lastUse: number; partial: boolean }> = []
    for (const name of names) {
      const path = join(dir, name)
      if (path === options.except || !options.names.test(name)) continue
      try {
        const info = await stat(path)
        if (!info.isFile()) continue
        files.push({ name, path, lastUse: Math.max(info.atimeMs, info.mtimeMs), partial: name.endsWith(".partial") })
      } catch {
        // Gone already.
      }
    }
    const complete = files.filter((f) => !f.partial).sort((a, b) => b.lastUse - a.lastUse)
    // `except` is one of the kept files.
    const candidates = [...complete.slice(Math.max(0, options.keep - 1)), ...files.filter((f) => f.partial)]
    const removed: Array<string> = []
    for (const file of candidates) {
      if (now - file.lastUse < RECENT_USE_MILLIS) continue
      try {
        await rm(file.path, { force: true })
        removed.push(file.name)
      } catch {
        // Not ours to remove (permissions): leave it.
      }
    }
    return removed
  }).pipe(
    Effect.tap((removed) =>
      removed.length === 0
        ? Effect.void
        : Effect.logDebug(`v86box: removed ${removed.length} unused file(s) from ${dir}: ${removed.join(", ")}`)
    )
  )
