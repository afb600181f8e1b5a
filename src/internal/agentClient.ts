/**
 * The agent client: speaks docs/protocol.md over a Machine. It decodes frames, routes
 * them to channels (one per command), and enforces flow control in both directions.
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"
import * as Mailbox from "effect/Mailbox"
import type * as Scope from "effect/Scope"
import { InvalidOptions, MachineError } from "../Errors.ts"
import type { Machine } from "./machine.ts"
import {
  decodeExit,
  decodePairs,
  decodeU32,
  encodeFrame,
  encodePairs,
  encodeU32,
  FrameDecoder,
  frameTypeName,
  FrameType,
  type Frame,
  MAX_PAYLOAD_BYTES,
  PROTOCOL_VERSION,
  STDIN_WINDOW
} from "./protocol.ts"

export interface AgentInfo {
  readonly protocol: number
  readonly agent: string
}

export interface ChannelRequest {
  readonly command: string
  readonly cwd?: string | undefined
  readonly uid?: number | undefined
  readonly gid?: number | undefined
  readonly env?: Readonly<Record<string, string>> | undefined
  /** Whether the command gets a stdin pipe (fed with `writeStdin`) or /dev/null. */
  readonly stdin: "pipe" | "null"
}

/**
 * Where a channel's output goes. `start` queues it for the Process's streams
 * (`QueuedOutput`), `exec` gathers it as text (`TextOutput`): no reader fiber per stream,
 * no wake-ups, and the credit goes back as the bytes arrive.
 */
export interface ChannelOutput {
  /** Takes bytes of one stream; true if they count as consumed already (their credit can go back). */
  readonly deliver: (kind: "stdout" | "stderr", bytes: Uint8Array) => boolean
  /** Drops what waits for a reader; how many bytes that was. */
  readonly clear: Effect.Effect<number>
  /** No more output: readers see the end, or the machine's failure. */
  readonly end: (exit: Exit.Exit<unknown, MachineError>) => Effect.Effect<void>
}

/** Output queued for readers, bounded by the credit the client grants as they take it. */
export class QueuedOutput implements ChannelOutput {
  private constructor(
    readonly stdout: Mailbox.Mailbox<Uint8Array, MachineError>,
    readonly stderr: Mailbox.Mailbox<Uint8Array, MachineError>
  ) {}

  static make: Effect.Effect<QueuedOutput> = Effect.zipWith(
    Mailbox.make<Uint8Array, MachineError>(),
    Mailbox.make<Uint8Array, MachineError>(),
    (stdout, stderr) => new QueuedOutput(stdout, stderr)
  )

  deliver(kind: "stdout" | "stderr", bytes: Uint8Array): boolean {
    this[kind].unsafeOffer(bytes)
    return false
  }

  get clear(): Effect.Effect<number> {
    const dropped = (mailbox: Mailbox.Mailbox<Uint8Array, MachineError>) =>
      mailbox.clear.pipe(
        Effect.map((chunks) => {
          let bytes = 0
          for (const chunk of chunks) bytes += chunk.length
          return bytes
        }),
        Effect.orElseSucceed(() => 0)
      )
    return Effect.zipWith(dropped(this.stdout), dropped(this.stderr), (a, b) => a + b)
  }

  end(exit: Exit.Exit<unknown, MachineError>): Effect.Effect<void> {
    return Exit.isSuccess(exit)
      ? Effect.zipRight(this.stdout.end, this.stderr.end)
      : Effect.zipRight(this.stdout.failCause(exit.cause), this.stderr.failCause(exit.cause))
  }
}

/**
 * Output gathered as text as it arrives: invalid UTF-8 becomes U+FFFD, a character split
 * across chunks is decoded whole.
 */
export class TextOutput implements ChannelOutput {
  private readonly decoders = { stdout: new TextDecoder("utf-8"), stderr: new TextDecoder("utf-8") }
  private readonly texts = { stdout: "", stderr: "" }

  deliver(kind: "stdout" | "stderr", bytes: Uint8Array): boolean {
    this.texts[kind] += this.decoders[kind].decode(bytes, { stream: true })
    return true
  }

  readonly clear: Effect.Effect<number> = Effect.succeed(0)

  end(): Effect.Effect<void> {
    return Effect.void
  }

  /** The text so far; a character cut off at the end becomes U+FFFD. */
  collected(): { readonly stdout: string; readonly stderr: string } {
    this.texts.stdout += this.decoders.stdout.decode()
    this.texts.stderr += this.decoders.stderr.decode()
    return { ...this.texts }
  }
}

/** How a command ended, as the agent reported it. */
export interface ChannelExit {
  readonly code: number
  /** The signal number that killed it, 0 if it exited on its own. */
  readonly signal: number
  /** Set when the command could not start (bad cwd, exec failure): the agent's reason. */
  readonly startError?: string | undefined
}

/** Output credit is returned in batches: one CREDIT frame per this many consumed bytes. */
const CREDIT_BATCH_BYTES = 65536
const SIGKILL = 9
/** Stdin is sent in frames of at most this size. */
const STDIN_FRAME_BYTES = 16384

/**
 * One running command as the client sees it. What its output waits in (`output`) is
 * bounded by the output credit the client has granted.
 */
export class Channel {
  readonly exit = Deferred.unsafeMake<ChannelExit, MachineError>(FiberId.none)
  /** Total bytes of output received (stdout and stderr). */
  outputBytes = 0
  /** Output beyond this many bytes is dropped and the command killed. */
  outputLimit: number | undefined = undefined
  /** Why the client killed the command, if it did. */
  termination: "timeout" | "outputLimit" | undefined = undefined
  private uncreditedBytes = 0
  private discarding = false
  private readonly stdinPermits = Effect.unsafeMakeSemaphore(STDIN_WINDOW)

  constructor(
    readonly id: number,
    private readonly client: AgentClient,
    readonly output: ChannelOutput
  ) {}

  /** The command ended (EXIT, start failure or machine failure): nothing more is sent for it. */
  done = false

  /** The consumer took `bytes` of output: give the guest room for as many more. */
  consumed(bytes: number): Effect.Effect<void, MachineError> {
    return Effect.suspend(() => {
      this.uncreditedBytes += bytes
      return this.returnCredit()
    })
  }

  /**
   * Credit goes back in fixed units of CREDIT_BATCH_BYTES, whatever sizes the consumer
   * took: so the frames the client sends depend only on how much output arrived, not on
   * how the consumer's reads were batched, and a recording replays byte for byte. The
   * remainder (< one unit) never starves the agent: it still holds the rest of its window.
   */
  private returnCredit(): Effect.Effect<void, MachineError> {
    const units = Math.floor(this.uncreditedBytes / CREDIT_BATCH_BYTES)
    if (units === 0 || this.done) return Effect.void
    this.uncreditedBytes -= units * CREDIT_BATCH_BYTES
    const credit = encodeU32(CREDIT_BATCH_BYTES)
    return Effect.forEach(
      Array.from({ length: units }),
      () => this.client.sendFrame({ type: FrameType.CREDIT, channel: this.id, payload: credit }),
      { discard: true }
    )
  }

  /**
   * From now on output is thrown away and credited at once, so the agent can drain the
   * command's pipes and finish even though nobody reads them.
   */
  discardOutput(): Effect.Effect<void, MachineError> {
    return Effect.suspend(() => {
      this.discarding = true
      return Effect.flatMap(this.output.clear, (dropped) => {
        this.uncreditedBytes += dropped
        return this.returnCredit()
      })
    })
  }

  /** Kills the command's process group and remembers why. */
  terminate(reason: "timeout" | "outputLimit"): Effect.Effect<void, MachineError> {
    // Lazy: a timer builds this effect when the command starts and runs it only if time runs out.
    return Effect.suspend(() => {
      if (this.termination !== undefined || this.done) return Effect.void
      this.termination = reason
      return this.signal(SIGKILL)
    })
  }

  signal(signal: number): Effect.Effect<void, MachineError> {
    return this.done
      ? Effect.void
      : this.client.sendFrame({ type: FrameType.SIGNAL, channel: this.id, payload: encodeU32(signal) })
  }

  /** Sends stdin bytes, waiting while the guest has `STDIN_WINDOW` bytes unacknowledged. */
  writeStdin(bytes: Uint8Array): Effect.Effect<void, MachineError> {
    const self = this
    return Effect.gen(function*() {
      for (let offset = 0; offset < bytes.length && !self.done; offset += STDIN_FRAME_BYTES) {
        const piece = bytes.subarray(offset, offset + STDIN_FRAME_BYTES)
        yield* self.stdinPermits.take(piece.length)
        if (self.done) return
        yield* self.client.sendFrame({ type: FrameType.STDIN, channel: self.id, payload: piece })
      }
    })
  }

  closeStdin(): Effect.Effect<void, MachineError> {
    return this.done
      ? Effect.void
      : this.client.sendFrame({ type: FrameType.STDIN, channel: this.id, payload: new Uint8Array(0) })
  }

  /** @internal called by the client's reader */
  onOutput(kind: "stdout" | "stderr", bytes: Uint8Array): Effect.Effect<void, MachineError> {
    const before = this.outputBytes
    this.outputBytes += bytes.length
    if (this.discarding) {
      this.uncreditedBytes += bytes.length
      return this.returnCredit()
    }
    if (this.outputLimit === undefined || this.outputBytes <= this.outputLimit) {
      this.deliver(kind, bytes)
      return this.returnCredit()
    }
    // The chunk that crosses the limit is cut at it; everything after is dropped.
    const kept = Math.max(0, this.outputLimit - before)
    if (kept > 0) this.deliver(kind, bytes.slice(0, kept))
    this.discarding = true
    this.uncreditedBytes += bytes.length - kept
    return Effect.zipRight(this.terminate("outputLimit"), this.returnCredit())
  }

  /** Hands output on; what the output takes at once (text) is credited now, the rest as readers take it. */
  private deliver(kind: "stdout" | "stderr", bytes: Uint8Array): void {
    if (this.output.deliver(kind, bytes)) this.uncreditedBytes += bytes.length
  }

  /** @internal */
  onStdinAck(bytes: number): Effect.Effect<void> {
    return this.stdinPermits.release(bytes)
  }

  /** @internal */
  onEnd(exit: Exit.Exit<ChannelExit, MachineError>): Effect.Effect<void> {
    return Effect.suspend(() => {
      this.done = true
      return this.output.end(exit).pipe(
        Effect.zipRight(Deferred.done(this.exit, exit)),
        // Wake any writer waiting for stdin room: the command is gone.
        Effect.zipRight(this.stdinPermits.releaseAll)
      )
    })
  }
}

/** What INIT sets in the guest; each is optional. */
export interface InitSettings {
  readonly timeMillis?: number
  readonly entropyHex?: string
  readonly hostname?: string
}

/**
 * Talks to one agent over one machine. `make` forks the reader into the given scope;
 * when the machine fails, every open channel fails with the same MachineError.
 */
export class AgentClient {
  private readonly channels = new Map<number, Channel>()
  private nextChannelId = 1
  private failure: MachineError | undefined
  private readonly initAcks: Array<Deferred.Deferred<void, MachineError>> = []
  private readonly decoder = new FrameDecoder({ skipNoise: true })

  private constructor(
    readonly machine: Machine,
    readonly ready: Deferred.Deferred<AgentInfo, MachineError>
  ) {}

  /**
   * With `resumed`, the machine was restored from a state saved after the agent's READY:
   * no READY comes again, and the first answer (to INIT) proves the agent is there.
   */
  static make(machine: Machine, options?: { readonly resumed?: boolean }): Effect.Effect<AgentClient, never, Scope.Scope> {
    return Effect.gen(function*() {
      const ready = yield* Deferred.make<AgentInfo, MachineError>()
      const client = new AgentClient(machine, ready)
      if (options?.resumed === true) client.decoder.skipNoise = false
      yield* Effect.forkScoped(client.readLoop())
      return client
    })
  }

  /** Commands started and not yet ended. */
  get pending(): number {
    return this.channels.size
  }

  get isAlive(): boolean {
    return this.failure === undefined
  }

  sendFrame(frame: Frame): Effect.Effect<void, MachineError> {
    return Effect.suspend(() =>
      this.failure !== undefined ? Effect.fail(this.failure) : this.machine.send(encodeFrame(frame))
    )
  }

  /**
   * Starts a command; its output goes to `output`, its exit to the returned channel. A
   * command that does not fit in one EXEC frame is bad input, refused before anything is
   * sent. (Plain code, not a generator: this runs once per command.)
   */
  open(request: ChannelRequest, output: ChannelOutput): Effect.Effect<Channel, MachineError | InvalidOptions> {
    return Effect.suspend((): Effect.Effect<Channel, MachineError | InvalidOptions> => {
      if (this.failure !== undefined) return Effect.fail(this.failure)
      let payload: Uint8Array
      try {
        payload = encodePairs(execPairs(request))
      } catch (error) {
        return Effect.fail(
          new MachineError({ reason: `cannot send the command: ${(error as Error).message}`, consoleTail: "" })
        )
      }
      if (payload.length > MAX_PAYLOAD_BYTES) {
        return Effect.fail(
          new InvalidOptions({
            issues: [
              `command: the command, its cwd and environment take ${payload.length} bytes (UTF-8); at most ${MAX_PAYLOAD_BYTES} fit in one request. Write a longer script to a file (box.fs) or pass it on stdin.`
            ]
          })
        )
      }
      const channel = new Channel(this.nextChannelId++, this, output)
      this.channels.set(channel.id, channel)
      return Effect.as(this.sendFrame({ type: FrameType.EXEC, channel: channel.id, payload }), channel)
    })
  }

  /** Sets the guest clock, feeds its RNG, names the host (after boot or restore). */
  init(settings: InitSettings) {
    return Effect.flatten(this.sendInit(settings))
  }

  /**
   * Sends INIT and returns what waits for its answer: the frame is on its way when this
   * has run, ahead of any frame sent after it (the agent reads them in order).
   */
  sendInit(settings: InitSettings) {
    return Effect.gen(this, function*() {
      const acknowledged = yield* Deferred.make<void, MachineError>()
      this.initAcks.push(acknowledged)
      const pairs: Array<[string, string]> = []
      if (settings.timeMillis !== undefined) pairs.push(["time", String(Math.floor(settings.timeMillis))])
      if (settings.entropyHex !== undefined) pairs.push(["entropy", settings.entropyHex])
      if (settings.hostname !== undefined) pairs.push(["hostname", settings.hostname])
      yield* this.sendFrame({ type: FrameType.INIT, channel: 0, payload: encodePairs(pairs) })
      return Deferred.await(acknowledged)
    })
  }

  private readLoop(): Effect.Effect<void> {
    const self = this
    return Effect.gen(function*() {
      while (true) {
        const bytes = yield* self.machine.receive
        const frames = yield* self.decodeOr(() => self.decoder.push(bytes))
        for (const frame of frames) yield* self.dispatch(frame)
      }
    }).pipe(Effect.catchAll((error) => self.failAll(error)))
  }

  private protocolError(reason: string): MachineError {
    return new MachineError({ reason: `the guest agent broke the protocol: ${reason}`, consoleTail: "" })
  }

  /** Plain code, not a generator: this runs for every frame. */
  private dispatch(frame: Frame): Effect.Effect<void, MachineError> {
    return Effect.suspend(() => {
      if (frame.channel === 0) return this.dispatchControl(frame)
      const channel = this.channels.get(frame.channel)
      // A late frame for a channel that already ended carries nothing anyone waits for.
      if (channel === undefined) return Effect.void
      switch (frame.type) {
        case FrameType.STARTED:
          return Effect.void
        case FrameType.STDOUT:
          return channel.onOutput("stdout", frame.payload)
        case FrameType.STDERR:
          return channel.onOutput("stderr", frame.payload)
        case FrameType.STDIN_ACK:
          return Effect.flatMap(this.decodeOr(() => decodeU32(frame.payload)), (bytes) => channel.onStdinAck(bytes))
        case FrameType.EXIT:
          return Effect.flatMap(this.decodeOr(() => decodeExit(frame.payload)), ({ code, signal }) => {
            this.channels.delete(channel.id)
            return channel.onEnd(Exit.succeed({ code, signal }))
          })
        case FrameType.ERROR: {
          this.channels.delete(channel.id)
          const startError = new TextDecoder().decode(frame.payload)
          return channel.onEnd(Exit.succeed({ code: 127, signal: 0, startError }))
        }
        default:
          return Effect.fail(this.protocolError(`unexpected ${frameTypeName(frame.type)} frame on channel ${frame.channel}`))
      }
    })
  }

  private dispatchControl(frame: Frame): Effect.Effect<void, MachineError> {
    return Effect.gen(this, function*() {
      switch (frame.type) {
        case FrameType.READY: {
          const pairs = new Map(yield* this.decodeOr(() => decodePairs(frame.payload)))
          const protocol = Number(pairs.get("protocol"))
          if (protocol !== PROTOCOL_VERSION) {
            return yield* Effect.fail(
              new MachineError({
                reason: `the guest agent speaks protocol ${pairs.get("protocol")}, this SDK speaks ${PROTOCOL_VERSION}`,
                consoleTail: ""
              })
            )
          }
          this.decoder.skipNoise = false
          yield* Deferred.succeed(this.ready, { protocol, agent: pairs.get("agent") ?? "unknown" })
          return
        }
        case FrameType.PONG:
          // The client sends no PING; an answer to none carries nothing.
          return
        case FrameType.INIT_OK: {
          const acknowledged = this.initAcks.shift()
          if (acknowledged !== undefined) yield* Deferred.succeed(acknowledged, undefined)
          return
        }
        case FrameType.ERROR:
          return yield* Effect.fail(this.protocolError(`the agent rejected a frame: ${new TextDecoder().decode(frame.payload)}`))
        default:
          return yield* Effect.fail(this.protocolError(`unexpected ${frameTypeName(frame.type)} frame on channel 0`))
      }
    })
  }

  private decodeOr<A>(decode: () => A): Effect.Effect<A, MachineError> {
    return Effect.try({ try: decode, catch: (error) => this.protocolError((error as Error).message) })
  }

  private failAll(error: MachineError): Effect.Effect<void> {
    return Effect.gen(this, function*() {
      const consoleTail = error.consoleTail.length > 0 ? error.consoleTail : yield* this.machine.kernelLogTail
      const failure = new MachineError({ reason: error.reason, consoleTail })
      this.failure = failure
      yield* Deferred.fail(this.ready, failure)
      for (const waiter of this.initAcks.splice(0)) yield* Deferred.fail(waiter, failure)
      const channels = [...this.channels.values()]
      this.channels.clear()
      for (const channel of channels) yield* channel.onEnd(Exit.fail(failure))
    })
  }
}

/** The EXEC frame's pairs for a request (the testkit scripts transcripts with it too). */
export const execPairs = (request: ChannelRequest): Array<[string, string]> => {
  const pairs: Array<[string, string]> = [["cmd", request.command]]
  if (request.cwd !== undefined) pairs.push(["cwd", request.cwd])
  if (request.uid !== undefined) pairs.push(["uid", String(request.uid)])
  if (request.gid !== undefined) pairs.push(["gid", String(request.gid)])
  for (const [name, value] of Object.entries(request.env ?? {})) pairs.push(["env", `${name}=${value}`])
  pairs.push(["stdin", request.stdin])
  return pairs
}

