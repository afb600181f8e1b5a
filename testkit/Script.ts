/**
 * Transcripts written by hand instead of recorded: a scripted sandbox whose commands
 * answer with the output and exit codes you choose. Useful to test how your code handles
 * results a real guest rarely gives (odd bytes, failures), without a VM.
 *
 * @since 0.1.0
 */
import { execPairs } from "../src/internal/agentClient.ts"
import {
  encodeExit,
  encodeFrame,
  encodePairs,
  encodeU32,
  type Frame,
  FrameType,
  MAX_PAYLOAD_BYTES,
  PROTOCOL_VERSION
} from "../src/internal/protocol.ts"
import { type Event, FORMAT_VERSION, type Transcript } from "./Transcript.ts"

/**
 * One scripted command: what the code will run and what the guest answers. Commands are
 * answered in order, one at a time (the code must run them sequentially).
 *
 * @since 0.1.0
 * @category models
 */
export interface ScriptedCommand {
  readonly command: string
  readonly stdout?: Uint8Array | string | undefined
  readonly stderr?: Uint8Array | string | undefined
  readonly exitCode?: number | undefined
  /** The signal number that killed it (exitCode is then 128 + signal). */
  readonly signal?: number | undefined
}

const guestInit = { timeMillis: 0, entropyHex: "00".repeat(32) }

const bytesOf = (data: Uint8Array | string | undefined): Uint8Array =>
  typeof data === "string" ? new TextEncoder().encode(data) : data ?? new Uint8Array(0)

/**
 * A transcript in which the agent boots and answers `commands`, in order, as scripted.
 * Replay it with `Testkit.layerReplay(transcript, { fingerprint: "ignore" })`. Output
 * of each command must stay under 64 KiB per stream (larger output needs flow control
 * that only a recording captures).
 *
 * @since 0.1.0
 * @category constructors
 */
export const script = (commands: ReadonlyArray<ScriptedCommand>): Transcript => {
  const events: Array<Event> = []
  const from = (frame: Frame) => events.push({ t: 0, d: "from", data: encodeFrame(frame) })
  const to = (frame: Frame) => events.push({ t: 0, d: "to", data: encodeFrame(frame) })
  from({ type: FrameType.READY, channel: 0, payload: encodePairs([["protocol", String(PROTOCOL_VERSION)], ["agent", "scripted"]]) })
  to({
    type: FrameType.INIT,
    channel: 0,
    payload: encodePairs([["time", String(guestInit.timeMillis)], ["entropy", guestInit.entropyHex]])
  })
  from({ type: FrameType.INIT_OK, channel: 0, payload: new Uint8Array(0) })
  commands.forEach((scripted, index) => {
    const channel = index + 1
    to({
      type: FrameType.EXEC,
      channel,
      payload: encodePairs(execPairs({ command: scripted.command, uid: 0, stdin: "null" }))
    })
    from({ type: FrameType.STARTED, channel, payload: encodeU32(1000 + channel) })
    for (const [type, data] of [[FrameType.STDOUT, scripted.stdout], [FrameType.STDERR, scripted.stderr]] as const) {
      const bytes = bytesOf(data)
      for (let offset = 0; offset < bytes.length; offset += MAX_PAYLOAD_BYTES / 4) {
        from({ type, channel, payload: bytes.slice(offset, offset + MAX_PAYLOAD_BYTES / 4) })
      }
    }
    const signal = scripted.signal ?? 0
    from({ type: FrameType.EXIT, channel, payload: encodeExit(scripted.exitCode ?? (signal > 0 ? 128 + signal : 0), signal) })
  })
  return {
    header: {
      v86box: "transcript",
      format: FORMAT_VERSION,
      fingerprint: { image: "scripted", protocol: PROTOCOL_VERSION, v86: "scripted", memoryMB: 0 },
      guestInit,
      recordedAt: new Date(0).toISOString()
    },
    events
  }
}
