/**
 * The byte length of a typed array as the engine knows it, taken from
 * %TypedArray%.prototype when this module loads: a `byteLength` redefined on an array or
 * a prototype patched later cannot change it (a getter returning 1e9 once kept the
 * loader's hash busy for over 20 s). It is 0 for a detached array (for which Deno's FFI
 * passes a null pointer).
 *
 * @module
 */

const typedArrayByteLength = Function.prototype.call.bind(
  Object.getOwnPropertyDescriptor(Object.getPrototypeOf(Uint8Array.prototype), "byteLength")!
    .get!,
) as (a: ArrayBufferView) => number;

/**
 * The byte length of typed array `a` as the engine knows it (0 when detached): what every
 * FFI call passes beside a buffer. A TypeError for anything but a typed array.
 */
export function byteLengthOf(a: ArrayBufferView): number {
  return typedArrayByteLength(a);
}
