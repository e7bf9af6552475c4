/** What fn throws, or null when it returns (for assertions on the error's fields, which assert.throws cannot make). */
export function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (e) {
    return e;
  }
  return null;
}
