/**
 * Housekeeping of what the SDK writes into `assetsDir`: warm-start states (`states/`,
 * ~20 MB each) and unpacked root disks (`disks/`, ~40 MB each). Each new guest image,
 * memory size or v86 version writes new ones and never reads the old ones again, so
 * without pruning they pile up (a developer machine had 669 MB of states).
 *
 * When the SDK adds a file to such a dir, it removes the files there written more than
 * an hour ago, except the `keep` newest, and leftovers of interrupted writes
 * (`*.partial`). A file's age is its modification time: the SDK writes these files once
 * and never touches them again (their times are how the asset memos and the standby
 * tell versions apart, and Node cannot set an access time alone). So a state or disk
 * still in use can go once `keep` newer ones exist: a process that has it open still
 * reads it (POSIX), and the next sandbox that asks for it rebuilds it (a cold boot, an
 * unpack). The hour protects a process that has just picked a file, not yet opened.
 */
import * as Effect from "effect/Effect"
import { readdir, rm, stat } from "node:fs/promises"
import { join } from "node:path"

/** Files this young are never removed. */
const RECENT_MILLIS = 60 * 60 * 1000

export interface PruneOptions {
  /** The names of the SDK's files (and their `.partial` leftovers): nothing else is touched. */
  readonly names: RegExp
  /** How many of the newest files stay, however old. */
  readonly keep: number
  /** Never removed (the file just written). */
  readonly except: string
}

/**
 * Removes the files of `dir` named like `names` written more than an hour ago, but the
 * `keep` newest and `except`; returns the names removed. Never fails (a file another
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
    const files: Array<{ name: string; path: string; written: number; partial: boolean }> = []
    for (const name of names) {
      const path = join(dir, name)
      if (path === options.except || !options.names.test(name)) continue
      try {
        const info = await stat(path)
        if (!info.isFile()) continue
        files.push({ name, path, written: info.mtimeMs, partial: name.endsWith(".partial") })
      } catch {
        // Gone already.
      }
    }
    const complete = files.filter((f) => !f.partial).sort((a, b) => b.written - a.written)
    // `except` is one of the kept files.
    const candidates = [...complete.slice(Math.max(0, options.keep - 1)), ...files.filter((f) => f.partial)]
    const removed: Array<string> = []
    for (const file of candidates) {
      if (now - file.written < RECENT_MILLIS) continue
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
        : Effect.logDebug(`v86box: removed ${removed.length} older file(s) from ${dir}: ${removed.join(", ")}`)
    )
  )
