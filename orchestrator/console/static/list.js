// natstx console: the list of transactions and sagas, polled every second.
"use strict";

(() => {
	const { el, api, syncClock, duration, badge, poll, showError } = natstx;
	const form = document.getElementById("filters");
	const rows = document.getElementById("tx-rows");
	const summary = document.getElementById("summary");
	const errorBox = document.getElementById("error");

	// The filters live in the page's URL, so a filtered list can be shared.
	function fromURL() {
		const q = new URLSearchParams(location.search);
		for (const input of form.elements) {
			if (!input.name) continue;
			if (input.type === "checkbox") input.checked = q.get(input.name) === "1";
			else input.value = q.get(input.name) || "";
		}
	}
	function query() {
		const q = new URLSearchParams();
		for (const input of form.elements) {
			if (!input.name) continue;
			if (input.type === "checkbox") { if (input.checked) q.set(input.name, "1"); }
			else if (input.value.trim() !== "") q.set(input.name, input.value.trim());
		}
		return q.toString();
	}
	function changed() {
		const q = query();
		history.replaceState(null, "", q ? "/?" + q : "/");
		refresh();
	}
	form.addEventListener("change", changed);
	form.addEventListener("input", (e) => { if (e.target.type === "text") changed(); });
	form.addEventListener("submit", (e) => { e.preventDefault(); changed(); });
	document.getElementById("f-clear").addEventListener("click", () => {
		form.reset();
		for (const input of form.elements) if (input.type === "text") input.value = "";
		changed();
	});

	function waitingCell(t) {
		if (!t.waiting || t.waiting.length === 0) return "";
		const who = t.waiting.join(", ");
		return t.waiting_ms ? who + " (" + duration(t.waiting_ms) + ")" : who;
	}

	function render(data) {
		rows.replaceChildren();
		for (const t of data.transactions) {
			const flags = [];
			if (t.retrying) flags.push(el("span", { class: "badge flag" }, "retrying"));
			if (t.stuck) flags.push(el("span", { class: "badge flag" }, "stuck"));
			rows.append(el("tr", { dataset: { id: t.id, state: t.state } },
				el("td", { class: "mono" }, el("a", { href: "/tx/" + encodeURIComponent(t.id) }, t.id)),
				el("td", {}, el("span", { class: "badge proto" }, t.protocol)),
				el("td", { class: "state" }, badge(t.state), flags),
				el("td", { class: "num" }, duration(t.age_ms)),
				el("td", { class: "waiting-on" }, waitingCell(t)),
				el("td", { class: "reason" }, t.reason || "")));
		}
		if (data.transactions.length === 0) {
			rows.append(el("tr", {}, el("td", { colspan: 6, class: "empty" },
				data.held === 0 ? "No transaction held yet." : "No transaction matches these filters.")));
		}
		let s = data.matched + " of " + data.held + " transactions and sagas held";
		if (data.truncated) s += " (showing the newest " + data.limit + ")";
		summary.textContent = s + "; refreshed every second.";
		const sa = document.getElementById("f-stuck-after");
		if (!sa.value) sa.placeholder = duration(data.stuck_after_ms);
	}

	let seq = 0;
	async function refresh() {
		const mine = ++seq;
		try {
			const data = await api("/api/tx?" + query());
			if (mine !== seq) return; // a newer request answers
			syncClock(data.now);
			showError(errorBox, null);
			render(data);
		} catch (e) {
			if (mine === seq) showError(errorBox, e);
		}
	}

	fromURL();
	poll(refresh, 1000);
})();
