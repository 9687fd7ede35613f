/**
 * The one place @peculiar/x509 is loaded. Its tsyringe dependency needs the Reflect metadata
 * API at load time, so the polyfill (the package x509's docs name) is imported first; ESM
 * evaluates sibling imports in order.
 */
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

export { x509 };
