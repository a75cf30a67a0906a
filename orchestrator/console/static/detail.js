// natstx console: one transaction or saga, polled every second until it is
// over; its operator actions, each confirmed with who and why.
"use strict";

(() => {
	const { el, api, syncClock, since, duration, time, badge, poll, showError } = natstx;
	const id = decodeURIComponent(location.pathname.replace(/^\/tx\//, ""));
	const $ = (x) => document.getElementById(x);
	document.title = "natstx console: " + id;
	$("tx-id").textContent = id;

	let current = null; // the latest detail answer

	function text(id, v) { $(id).textContent = v === undefined || v === null ? "" : v; }

	// The waiting line ticks every second between polls.
	function renderWaiting() {
		const box = $("waiting");
		if (!current) return;
		const s = current.summary;
		box.replaceChildren();
		if (s.final) {
			box.append(el("span", { class: "muted" }, "nothing: it is over"));
			return;
		}
		if (!s.waiting || s.waiting.length === 0) {
			box.append(el("span", { class: "muted" }, "no participant"));
			return;
		}
		box.append(el("span", { class: "waiting", id: "waiting-on" }, s.waiting.join(", ")));
		const ws = current.status.waiting_since;
		if (ws) {
			box.append(" — ", el("span", { class: "waiting", id: "waiting-for" }, "waiting " + duration(since(ws))),
				el("span", { class: "muted" }, " (since " + time(ws) + ")"));
		}
	}

	function renderParticipants(st) {
		const tbody = $("participants").tBodies[0];
		tbody.replaceChildren();
		for (const p of st.participants || []) {
			tbody.append(el("tr", { dataset: { participant: p.name } },
				el("td", { class: "mono" }, p.name),
				el("td", {}, badge(p.vote)),
				el("td", {}, p.acked ? "acked" : "no"),
				el("td", { class: "num" }, p.sends),
				el("td", { class: "reason" }, p.reason || ""),
				el("td", { class: "reason" }, p.rejected || "")));
		}
	}

	// renderSteps updates the steps' rows in place: the page refreshes every
	// second, and a Resolve button replaced under the pointer loses the
	// click being made on it, so a row's button is only added or removed
	// when its step becomes resolvable or stops being so.
	// stepCells are the classes of a step row's cells: name, participant,
	// status, attempts, compensation attempts, last error, next retry, note,
	// action.
	const stepCells = ["mono", "mono", "", "num", "num", "reason", "", "reason", ""];
	function renderSteps(st, resolvable) {
		const tbody = $("steps").tBodies[0];
		const steps = st.steps || [];
		const names = JSON.stringify(steps.map((s) => s.name));
		if (tbody.dataset.names !== names) {
			tbody.dataset.names = names;
			tbody.replaceChildren(...steps.map((s) => el("tr", { dataset: { step: s.name } },
				stepCells.map((c) => el("td", { class: c })))));
		}
		steps.forEach((s, i) => {
			const cells = tbody.rows[i].cells;
			let next = "";
			if (s.next_retry_at) {
				const left = Date.parse(s.next_retry_at) - natstx.now();
				next = left > 0 ? "in " + duration(left) : "now";
			}
			const flags = [];
			if (s.pivot) flags.push(el("span", { class: "badge flag" }, "pivot"));
			if (s.stuck) flags.push(el("span", { class: "badge flag" }, "stuck"));
			cells[0].replaceChildren(s.name, ...flags);
			cells[1].textContent = s.participant;
			cells[2].replaceChildren(badge(s.status));
			cells[3].textContent = s.attempts || 0;
			cells[4].textContent = s.compensation_attempts || 0;
			cells[5].textContent = s.last_error ? s.last_error + (s.last_code ? " [" + s.last_code + "]" : "") : "";
			cells[6].textContent = next;
			cells[7].textContent = s.note || "";
			const want = (resolvable || []).includes(s.name);
			if (want !== !!cells[8].firstChild) {
				cells[8].replaceChildren(...(want ? [el("button", { type: "button", id: "action-resolve-" + s.name, onclick: () => confirmAction("resolve", s.name) }, "Resolve...")] : []));
			}
		});
	}

	function renderHistory(st) {
		const tbody = $("history").tBodies[0];
		tbody.replaceChildren();
		const events = st.history || [];
		$("history-empty").classList.toggle("hidden", events.length > 0);
		$("history").classList.toggle("hidden", events.length === 0);
		$("history-dropped").classList.toggle("hidden", !st.history_dropped);
		text("history-dropped", st.history_dropped ? st.history_dropped + " events in the middle were left out (the first and the latest are kept)" : "");
		const start = Date.parse(st.started_at || (events[0] && events[0].at));
		for (const e of events) {
			const at = Date.parse(e.at);
			tbody.append(el("tr", { dataset: { event: e.event } },
				el("td", { class: "mono" }, time(e.at, true)),
				el("td", { class: "num" }, isNaN(start) ? "" : "+" + duration(at - start)),
				el("td", {}, e.event),
				el("td", { class: "mono" }, [e.participant, e.step].filter(Boolean).join(" / ")),
				el("td", { class: "num" }, e.attempt || ""),
				el("td", { class: "reason" }, e.detail || ""),
				el("td", {}, e.by || "")));
		}
	}

	const actionText = {
		abort2pc: ["Abort this transaction?", "Every participant is told to abort; a participant that voted yes releases what it holds. This cannot be undone."],
		abortSaga: ["Abort this saga?", "It stops going forward and compensates the steps done, last first. This cannot be undone."],
		retry: ["Retry now?", "Every step waiting for its back-off is sent its next attempt now."],
		resolve: ["Resolve step by hand?", "The step is marked resolved by hand (compensated, or past the pivot done): do this only once you have made it so yourself."],
	};

	// renderActions rebuilds the action buttons only when the actions change:
	// the page refreshes every second, and a button replaced under the
	// pointer loses the click being made on it.
	let shownActions = null;
	function renderActions(d) {
		const saga = d.summary.protocol === "saga";
		const key = JSON.stringify([saga, d.actions]);
		if (key === shownActions) return;
		shownActions = key;
		const box = $("actions");
		box.replaceChildren();
		for (const a of d.actions) {
			if (a === "abort") {
				box.append(el("button", { type: "button", class: "danger", id: "action-abort", onclick: () => confirmAction("abort") },
					saga ? "Abort (compensate)..." : "Abort..."));
			} else if (a === "retry") {
				box.append(el("button", { type: "button", class: "primary", id: "action-retry", onclick: () => confirmAction("retry") }, "Retry now..."));
			}
		}
	}

	function render(d) {
		current = d;
		const st = d.status;
		const saga = d.summary.protocol === "saga";
		$("tx-state").replaceChildren(badge(st.state));
		$("tx-protocol").replaceChildren(el("span", { class: "badge proto" }, d.summary.protocol));
		$("tx-reason").replaceChildren(st.reason ? st.reason : el("span", { class: "muted" }, "none yet"));
		text("tx-started", st.started_at ? time(st.started_at) + " (" + duration(since(st.started_at)) + " ago)" : "");
		text("tx-updated", st.updated_at ? time(st.updated_at) : "");
		text("tx-owner", st.owner || "");
		for (const e of document.querySelectorAll(".saga-only")) e.classList.toggle("hidden", !saga);
		text("tx-deadline", st.deadline ? time(st.deadline) : "none");
		$("participants-section").classList.toggle("hidden", saga);
		$("steps-section").classList.toggle("hidden", !saga);
		if (saga) renderSteps(st, d.resolvable); else renderParticipants(st);
		renderWaiting();
		renderActions(d);
		renderHistory(st);
	}

	async function refresh() {
		try {
			const d = await api("/api/tx/" + encodeURIComponent(id));
			syncClock(d.now);
			showError($("error"), null);
			render(d);
			return !d.summary.final; // a finished transaction changes no more
		} catch (e) {
			showError($("error"), e);
			return true;
		}
	}

	// confirmAction opens the confirm dialog for action (and step); the
	// action is sent only from its Confirm button.
	function confirmAction(action, step) {
		const saga = current && current.summary.protocol === "saga";
		const key = action === "abort" ? (saga ? "abortSaga" : "abort2pc") : action;
		const [title, body] = actionText[key];
		text("confirm-title", step ? title.replace("step", "step " + step) : title);
		text("confirm-text", body);
		$("confirm-who").value = localStorage.getItem("natstx-console-who") || "";
		$("confirm-why").value = "";
		showError($("confirm-error"), null);
		const dlg = $("confirm");
		dlg.dataset.action = action;
		dlg.dataset.step = step || "";
		dlg.showModal();
		($("confirm-who").value ? $("confirm-why") : $("confirm-who")).focus();
	}

	$("confirm-cancel").addEventListener("click", () => $("confirm").close());
	$("confirm-form").addEventListener("submit", async (e) => {
		e.preventDefault();
		const dlg = $("confirm");
		const who = $("confirm-who").value.trim(), why = $("confirm-why").value.trim();
		if (!who || !why) {
			showError($("confirm-error"), new Error("Say who you are and why: both are recorded."));
			return;
		}
		localStorage.setItem("natstx-console-who", who);
		const body = { who, why };
		if (dlg.dataset.step) body.step = dlg.dataset.step;
		$("confirm-ok").disabled = true;
		try {
			const r = await api("/api/tx/" + encodeURIComponent(id) + "/" + dlg.dataset.action, body);
			dlg.close();
			showError($("error"), null);
			$("action-result").textContent = r.message;
			$("action-result").classList.remove("hidden");
			stop();
			stop = poll(refresh, 1000);
		} catch (err) {
			showError($("confirm-error"), err);
		} finally {
			$("confirm-ok").disabled = false;
		}
	});

	setInterval(renderWaiting, 1000);
	let stop = poll(refresh, 1000);
})();
