// Checks an audit entry's inclusion in the signed log in the browser (DESIGN §12):
// leaf hash SHA-256(0x00 || leaf), RFC 9162 §2.1.3.2 inclusion proof with node hashes
// SHA-256(0x01 || left || right), the checkpoint's size and root, and the checkpoint's
// Ed25519 signature (C2SP signed note) against the platform's published keys.
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("proof-data").textContent);
  const M = data.messages;
  const status = document.getElementById("proof-status");
  const steps = document.getElementById("proof-steps");
  const b64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
  const cat = (...parts) => {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let o = 0;
    for (const p of parts) { out.set(p, o); o += p.length; }
    return out;
  };
  const eq = (a, b) => a.length === b.length && a.every((v, i) => v === b[i]);
  const step = (ok, text) => {
    const li = document.createElement("li");
    li.className = ok ? "ok" : "bad";
    li.textContent = (ok ? "✔ " : "✘ ") + text;
    steps.appendChild(li);
    return ok;
  };
  const finish = (ok) => {
    status.className = ok ? "ok" : "alarm";
    status.textContent = ok ? M.all_ok : M.all_bad;
    status.dataset.ok = String(ok);
  };
  // WebCrypto has SHA-256 and Ed25519 only: an sm2-sm3 deployment is left to the
  // offline verifier, said so plainly (never a false alarm).
  if (data.suite !== "ed25519-sha256") { status.className = "notice"; status.textContent = M.other_suite; status.dataset.ok = "unavailable"; return; }
  if (!window.crypto || !crypto.subtle) { status.textContent = M.no_crypto; status.dataset.ok = "false"; return; }
  const sha = async (bytes) => new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));

  async function rootFromProof(index, size, leafHash, proof) {
    let fn = index, sn = size - 1, r = leafHash;
    for (const p of proof) {
      if (sn === 0) return null;
      if (fn % 2 === 1 || fn === sn) {
        r = await sha(cat([1], p, r));
        if (fn % 2 === 0) {
          while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
        }
      } else {
        r = await sha(cat([1], r, p));
      }
      fn = Math.floor(fn / 2); sn = Math.floor(sn / 2);
    }
    return sn === 0 ? r : null;
  }

  async function checkSignature(note) {
    const cut = note.indexOf("\n\n");
    const body = new TextEncoder().encode(note.slice(0, cut + 1));
    const lines = note.slice(cut + 2).split("\n").filter((l) => l.startsWith("\u2014 "));
    for (const key of data.keys) {
      const pub = b64(key.x.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - key.x.length % 4) % 4));
      const id = (await sha(cat(new TextEncoder().encode(key.name + "\n"), [1], pub))).slice(0, 4);
      for (const line of lines) {
        const [, name, sig64] = line.split(" ");
        if (name !== key.name) continue;
        const raw = b64(sig64);
        if (!eq(raw.slice(0, 4), id)) continue;
        let k;
        try {
          k = await crypto.subtle.importKey("raw", pub, { name: "Ed25519" }, false, ["verify"]);
        } catch (e) {
          return "unsupported";
        }
        if (await crypto.subtle.verify({ name: "Ed25519" }, k, raw.slice(4), body)) return key.kid;
      }
    }
    return null;
  }

  (async () => {
    const leaf = b64(data.leaf);
    const leafHash = await sha(cat([0], leaf));
    let ok = step(eq(leafHash, b64(data.leaf_hash)), eq(leafHash, b64(data.leaf_hash)) ? M.leaf_ok : M.leaf_bad);
    const root = await rootFromProof(data.index, data.tree_size, leafHash, data.proof.map(b64));
    const inclusion = root !== null && eq(root, b64(data.root_hash));
    ok = step(inclusion, inclusion ? M.incl_ok : M.incl_bad) && ok;
    const lines = data.note.split("\n");
    const noteOk = lines[1] === String(data.tree_size) && lines[2] === data.root_hash;
    ok = step(noteOk, noteOk ? M.note_ok : M.note_bad) && ok;
    const signed = await checkSignature(data.note);
    if (signed === "unsupported") {
      step(true, M.sig_unsupported);
      status.dataset.signature = "server";
    } else {
      ok = step(signed !== null, signed !== null ? M.sig_ok.replace("{kid}", signed) : M.sig_bad) && ok;
      status.dataset.signature = signed !== null ? "browser" : "bad";
    }
    finish(ok);
  })().catch((e) => { step(false, String(e)); finish(false); });
})();
