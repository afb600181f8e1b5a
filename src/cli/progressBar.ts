/**
 * A download progress bar on stderr. On a terminal it redraws one line (at most ten
 * times a second); in a log (CI, a pipe) it prints a line at each quarter instead, so
 * logs stay short.
 */
import type { DownloadProgress } from "../Assets.ts"

export const formatBytes = (bytes: number): string =>
  bytes < 1024 * 1024 ? `${(bytes / 1024).toFixed(1)} KiB` : `${(bytes / (1024 * 1024)).toFixed(1)} MiB`

export const renderProgress = (progress: DownloadProgress, width = 24): string => {
  const label = progress.asset.padEnd(8)
  if (progress.totalBytes === undefined || progress.totalBytes === 0) {
    return `${label} ${formatBytes(progress.receivedBytes)}` // no Content-Length: no bar
  }
  const fraction = Math.min(1, progress.receivedBytes / progress.totalBytes)
  const filled = Math.round(fraction * width)
  const percent = `${Math.floor(fraction * 100)}%`.padStart(4)
  return `${label} [${"#".repeat(filled)}${"-".repeat(width - filled)}] ${percent}  ` +
    `${formatBytes(progress.receivedBytes)} / ${formatBytes(progress.totalBytes)}`
}

/** One bar for one download: `update` is the `onProgress` callback, `done` ends the line. */
export const makeProgressBar = (out: NodeJS.WriteStream = process.stderr) => {
  let lastDrawMillis = 0
  let lastQuarter = -1
  let drawn = false
  const update = (progress: DownloadProgress): void => {
    const complete = progress.totalBytes !== undefined && progress.receivedBytes >= progress.totalBytes
    if (out.isTTY) {
      const now = Date.now()
      if (!complete && now - lastDrawMillis < 100) return
      lastDrawMillis = now
      out.write(`\r\x1b[2K${renderProgress(progress)}`)
      drawn = true
    } else if (progress.totalBytes !== undefined && progress.totalBytes > 0) {
      const quarter = Math.floor((4 * progress.receivedBytes) / progress.totalBytes)
      if (quarter <= lastQuarter) return
      lastQuarter = quarter
      out.write(`${renderProgress(progress)}\n`)
    }
  }
  const done = (): void => {
    if (out.isTTY && drawn) out.write("\n")
  }
  return { update, done }
}
