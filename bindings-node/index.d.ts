// Types of exoservice-native: exoservices in Node on the exoservice Rust core.

import { EventEmitter } from 'node:events'

/** Any JSON value: what a payload can be. `null` stands for "no payload". */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json }

/** Options of `request`: a deadline in milliseconds, or an object. */
export type RequestOptions = number | {
  /** Deadline in milliseconds (default: the service's `requestTimeout`, 10000). */
  timeout?: number
  /** Resolve with the whole answer message instead of its payload. */
  full?: boolean
  /**
   * The request's auth (any JSON value; a reply carries it back). Only for
   * `ExoService#request`: a handler's request carries the handled message's auth.
   */
  auth?: unknown
}

/** A message as it travels over ExoCom. */
export interface Message {
  name: string
  id: string | null
  activityId: string | null
  sender: string | null
  payload: any
  auth: any
  isSecurity: boolean
  timestamp: string | null
  responseTime: number | null
}

/** Called for each message of the activity that `send` started. */
export type ReplyHandler = (
  messageName: string,
  payload: any,
  info: { activityId: string | null, auth: any }
) => unknown

/** Sends a message in a new activity; returns the activity id. */
export type Send = (name: string, payload?: unknown, replyHandler?: ReplyHandler) => string

/** Sends a request; resolves with the answer's payload (or message). */
export interface Request {
  (name: string, payload: unknown, options: { timeout?: number, full: true, auth?: unknown }): Promise<Message>
  (name: string, payload?: unknown, options?: RequestOptions): Promise<any>
}

/** What a handler gets besides the payload. */
export interface HandlerContext {
  /** Replies: same activity, auth and isSecurity as the message handled. */
  reply (name: string, payload?: unknown): void
  /** Sends in a new activity, carrying the handled message's auth. */
  send: Send
  /** Requests, carrying the handled message's auth; rejects with `TimeoutError`. */
  request: Request
  /** The name of the message handled. */
  name: string
  /** Its activity id. */
  activityId: string
  /**
   * Which attempt at the message this is: 1 for a first delivery, 2 and more
   * when an at-least-once message comes again after a failed handler (threw
   * or rejected) or an instance that died (NATS; always 1 on ExoCom).
   */
  deliveryAttempt: number
  /** The role that sent it, when the bus says. */
  sender: string | null
  /** Its auth (`null` when none). */
  auth: any
  /** Whether it belongs to the security exchange. */
  isSecurity: boolean
}

/** A message handler; a returned Promise is awaited, a rejection is logged. */
export type Handler = (payload: any, context: HandlerContext, activityId: string) => unknown

/** What a before-all hook may do: send (the messages go out once registered). */
export interface HookPowers {
  send: Send
}

/** Ends the before-all hook: `done()`, or `done(err)` to stop the start. */
export type Done = ((err?: unknown) => void) & HookPowers

/**
 * The before-all hook: `(done) => ...` calls `done()` (or `done(err)`); a
 * hook that returns a Promise is ready when it resolves. `done` also carries
 * `send`, so `async ({ send }) => ...` works too.
 */
export type BeforeAll = (done: Done, powers: HookPowers) => unknown

/** The drain report of `close()`. */
export interface DrainReport {
  /** Handlers still running when the drain deadline passed. */
  unfinishedHandlers: number
  /** Outgoing messages that could not be written before leaving. */
  unsentMessages: number
  /** Queued messages that no handler took because the service stopped. */
  unhandledMessages: number
}

export interface ExoServiceOptions {
  /** The role (default: `ROLE`, else the config file). */
  role?: string
  /** Where ExoCom runs (default: `EXOCOM_HOST`, else `localhost`). */
  exocomHost?: string
  /** ExoCom's port (default: `EXOCOM_PORT`, else 80). */
  exocomPort?: number | string
  /** The service directory or its service.yml (default: the working directory). */
  configPath?: string
  /** With `sends`: the config in code, no file read. */
  receives?: string[]
  /** With `receives`: the config in code, no file read. */
  sends?: string[]
  /** Handlers by message name. */
  handlers?: Record<string, Handler>
  /** Runs before the service registers. */
  beforeAll?: BeforeAll
  /** Handlers in flight at most (default: config, else 64). */
  concurrency?: number
  /** Milliseconds running handlers get when the service stops (default 10000). */
  drainTimeout?: number
  /** Default deadline of `request` in milliseconds (10000). */
  requestTimeout?: number
  /** A reply handler ends after this many milliseconds without a message (60000). */
  replyHandlerTimeout?: number
  /** Stop on SIGINT/SIGTERM: drain, then exit (default true). */
  handleSignals?: boolean
}

/** A service: config, handlers and a connection to ExoCom. */
export declare class ExoService extends EventEmitter {
  constructor (options?: ExoServiceOptions)
  readonly role: string
  readonly exocomHost: string
  readonly exocomPort: number
  readonly receives: string[]
  readonly sends: string[]
  readonly configFile: string
  /** Whether the service is registered with the bus right now. */
  readonly online: boolean
  readonly state: 'new' | 'starting' | 'running' | 'closing' | 'closed'
  requestTimeout: number
  replyHandlerTimeout: number

  /** Handles `name` (must be under `receives`). */
  handle (name: string, handler: Handler): this
  /** Sets the before-all hook. */
  beforeAll (hook: BeforeAll): this
  /** Runs the hook, connects and registers; resolves once online. */
  connect (): Promise<this>
  /** Sends in a new activity; returns the activity id. */
  send: Send
  /** Sends a request; resolves with the answer's payload (or message with `full`). */
  request: Request
  /** Stops, drains and leaves; the process can then exit by itself. */
  close (): Promise<DrainReport>

  on (event: 'online' | 'offline', listener: () => void): this
  on (event: 'error', listener: (err: Error & { messageName?: string, activityId?: string }) => void): this
  on (event: 'close', listener: (report: DrainReport) => void): this
  on (event: string | symbol, listener: (...args: any[]) => void): this
}

/**
 * Starts a service the exoservice-js way: one handler per message name plus
 * an optional `beforeAll`. Start-up errors are printed and set exit code 1.
 */
export declare function bootstrap<T extends Record<string, unknown>> (
  handlers: { [K in keyof T]: K extends 'beforeAll' ? BeforeAll : Handler },
  options?: ExoServiceOptions
): ExoService | undefined

export declare const DEFAULT_REQUEST_TIMEOUT: number
export declare const DEFAULT_REPLY_HANDLER_TIMEOUT: number

/** The base of every error of the framework. */
export declare class ExoError extends Error {
  readonly code: string
}
/** The configuration cannot be used (`file:line:col: message`). */
export declare class ConfigError extends ExoError { readonly code: 'EXO_CONFIG' }
/** A message name not declared under `sends`. */
export declare class UndeclaredError extends ExoError { readonly code: 'EXO_UNDECLARED' }
/** A handler for a name not declared under `receives`. */
export declare class NotReceivedError extends ExoError { readonly code: 'EXO_NOT_RECEIVED' }
/** Two handlers for one name. */
export declare class DuplicateHandlerError extends ExoError { readonly code: 'EXO_DUPLICATE_HANDLER' }
/** A request got no answer in time. */
export declare class TimeoutError extends ExoError {
  readonly code: 'EXO_TIMEOUT'
  messageName?: string
  timeout?: number
}
/** The outgoing buffer is full (the bus is away too long). */
export declare class BufferFullError extends ExoError { readonly code: 'EXO_BUFFER_FULL' }
/** The bus cannot be reached. */
export declare class ConnectionError extends ExoError { readonly code: 'EXO_CONNECTION' }
/** A payload that is not JSON. */
export declare class PayloadError extends ExoError { readonly code: 'EXO_PAYLOAD' }
/** An API used in a way it cannot work. */
export declare class UsageError extends ExoError { readonly code: 'EXO_USAGE' }
/** The service is stopped. */
export declare class StoppedError extends ExoError { readonly code: 'EXO_STOPPED' }
