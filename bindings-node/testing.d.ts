// Types of exoservice-native/testing: the mock bus.

import type { Message } from './index'

/** A mock ExoCom on 127.0.0.1: records what services send, sends them messages. */
export declare class MockBus {
  /** Starts one on a free port (or on `port`, e.g. to bring one back). */
  static start (port?: number): Promise<MockBus>
  /** The port (the service's EXOCOM_PORT). */
  readonly port: number
  /** `ws://127.0.0.1:PORT/services`. */
  readonly url: string
  /** Roles registered and connected. */
  roles (): string[]
  /** Connections registered as `role`. */
  instances (role: string): number
  /** Resolves once `role` registered; TimeoutError after `timeout` ms (5000). */
  waitForRegistration (role: string, timeout?: number): Promise<void>
  /** Sends a new message to `role` (waits up to 5 s for it to register); resolves with it as sent. */
  sendToService (role: string, name: string, payload?: unknown): Promise<Message>
  /** Sends a message with any fields (auth, isSecurity, activityId, ...). */
  sendMessage (role: string, message: Partial<Message> & { name: string }): Promise<Message>
  /** The first received `name` not returned before; TimeoutError after `timeout` ms (5000). */
  waitFor (name: string, timeout?: number): Promise<Message>
  /** Everything received since the start or the last reset(). */
  received (): Message[]
  /** Forgets received messages and automatic replies. */
  reset (): void
  /** Answers each `requestName` at once with `replyName` and `payload`. */
  mockReply (requestName: string, replyName: string, payload?: unknown): void
  /** Stops it like a killed bus. */
  shutdown (): Promise<void>
}
