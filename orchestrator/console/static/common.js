// natstx console: helpers shared by every page. No framework, no build step.
"use strict";

const natstx = (() => {
	// el builds an element: el("td", {class: "num"}, "text", child...).
	// Text is always set as text, never as HTML.
	function el(tag, attrs, ...children) {
		const e = document.createElement(tag);
		for (const [k, v] of Object.entries(attrs || {})) {
			if (v === undefined || v === null || v === false) continue;
			if (k === "class") e.className = v;
			else if (k === "dataset") Object.assign(e.dataset, v);
			else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
			else e.setAttribute(k, v === true ? "" : String(v));
		}
		for (const c of children.flat()) {
			if (c === undefined || c === null || c === false) continue;
			e.append(c instanceof Node ? c : document.createTextNode(String(c)));
		}
		return e;
	}

	// api calls the console's JSON API; a POST carries the CSRF header. It
	// resolves to the parsed answer, or rejects with the API's error message.
	async function api(path, body) {
		const opts = { credentials: "same-origin", headers: { "Accept": "application/json" } };
		if (body !== undefined) {
			opts.method = "POST";
			opts.headers["Content-Type"] = "application/json";
			opts.headers["X-Natstx-Console"] = "1";
			opts.body = JSON.stringify(body);
		}
		const resp = await fetch(path, opts);
		let data = null;
		try { data = await resp.json(); } catch (_) { /* not JSON */ }
		if (resp.status === 401 && !path.startsWith("/login")) {
			location.href = "/login";
		}
		if (!resp.ok) {
			throw new Error((data && data.error) || ("HTTP " + resp.status));
		}
		return data;
	}

	// The server's clock: durations are computed from the server's "now",
	// moved on by the time passed here since it was read.
	let offset = 0;
	function syncClock(serverNow) {
		if (serverNow) offset = Date.parse(serverNow) - Date.now();
		tickClock();
	}
	function now() { return Date.now() + offset; }
	function since(ts) {
		if (!ts) return null;
		return Math.max(0, now() - Date.parse(ts));
	}

	// duration formats milliseconds as 850ms, 12s, 3m04s, 2h05m, 3d04h.
	function duration(ms) {
		if (ms === null || ms === undefined || isNaN(ms)) return "";
		if (ms < 1000) return Math.round(ms) + "ms";
		const s = Math.floor(ms / 1000);
		if (s < 60) return s + "s";
		if (s < 3600) return Math.floor(s / 60) + "m" + pad(s % 60) + "s";
		if (s < 86400) return Math.floor(s / 3600) + "h" + pad(Math.floor(s / 60) % 60) + "m";
		return Math.floor(s / 86400) + "d" + pad(Math.floor(s / 3600) % 24) + "h";
	}

	const pad = (n, w) => String(n).padStart(w || 2, "0");
	// time formats a timestamp as local 2006-01-02 15:04:05 (with ms: .000).
	function time(ts, ms) {
		if (!ts) return "";
		const d = new Date(ts);
		if (isNaN(d)) return "";
		let s = d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
			pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
		if (ms) s += "." + pad(d.getMilliseconds(), 3);
		return s;
	}

	const good = ["committed", "completed", "done", "yes"];
	const bad = ["aborted", "compensated", "aborting", "failed", "no"];
	const warn = ["forward-stuck", "compensation-stuck", "compensating", "retrying", "compensation-retrying"];
	function badge(state) {
		let cls = "run";
		if (good.includes(state)) cls = "ok";
		else if (bad.includes(state)) cls = "bad";
		else if (warn.includes(state)) cls = "warn";
		return el("span", { class: "badge state " + cls, dataset: { state } }, state);
	}

	// poll calls f now and then every interval ms after each call ends, for
	// as long as f does not return false.
	function poll(f, interval) {
		let stopped = false;
		const tick = async () => {
			let again = true;
			try { again = (await f()) !== false; } catch (e) { console.error(e); }
			if (again && !stopped) setTimeout(tick, interval);
		};
		tick();
		return () => { stopped = true; };
	}

	function showError(box, err) {
		if (!box) return;
		if (err) {
			box.textContent = err.message || String(err);
			box.classList.remove("hidden");
		} else {
			box.textContent = "";
			box.classList.add("hidden");
		}
	}

	// The header's clock shows the server's time.
	function tickClock() {
		const c = document.getElementById("clock");
		if (c) c.textContent = "server time " + time(now());
	}
	setInterval(tickClock, 1000);

	return { el, api, syncClock, now, since, duration, time, badge, poll, showError };
})();
