// The tests' own API calls with the admin key scripts/browser-test.sh makes (IDSTREAM_ADMIN_KEY),
// to IDSTREAM_API_URL (another node on shared backends) or IDSTREAM_URL.

const apiBase = process.env.IDSTREAM_API_URL || process.env.IDSTREAM_URL;
const adminKey = process.env.IDSTREAM_ADMIN_KEY;

/** Calls the API as the admin; resolves to the parsed answer, throws on an error status. */
export async function admin(method, path, body) {
  const resp = await fetch(apiBase + path, {
    method,
    headers: { Authorization: `Bearer ${adminKey}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await resp.json();
  if (!resp.ok) throw new Error(`${method} ${path}: ${resp.status} ${JSON.stringify(data)}`);
  return data;
}
