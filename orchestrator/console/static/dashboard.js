// natstx console: the dashboard. It polls /api/stats every second, keeps
// five minutes of snapshots and draws them as inline SVG charts.
"use strict";

(() => {
	const { el, api, syncClock, duration, showError } = natstx;
	const $ = (x) => document.getElementById(x);
	const keep = 300; // snapshots: five minutes at one a second
	const snaps = [];
	const NS = "http://www.w3.org/2000/svg";

	function svg(tag, attrs, text) {
		const e = document.createElementNS(NS, tag);
		for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
		if (text !== undefined) e.textContent = text;
		return e;
	}

	function fmt(v) {
		if (v === 0) return "0";
		const a = Math.abs(v);
		if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
		if (a >= 1e3) return (v / 1e3).toFixed(1) + "k";
		if (a >= 10) return v.toFixed(0);
		if (a >= 1) return v.toFixed(1);
		return v.toFixed(2);
	}

	const W = 600, H = 200, L = 48, R = 10, T = 22, B = 24;

	// lineChart draws series [{name, points: [[t, v]...]}] over time.
	function lineChart(box, series) {
		box.replaceChildren();
		const all = series.flatMap((s) => s.points);
		if (all.length < 2) {
			box.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, snaps.length < 3 ? "collecting data..." : "nothing to show in this window"));
			return;
		}
		const t0 = Math.min(...all.map((p) => p[0])), t1 = Math.max(...all.map((p) => p[0]));
		let vmax = Math.max(...all.map((p) => p[1]));
		if (!(vmax > 0)) vmax = 1;
		vmax *= 1.1;
		const x = (t) => L + (t1 === t0 ? 0 : (t - t0) / (t1 - t0)) * (W - L - R);
		const y = (v) => H - B - (v / vmax) * (H - T - B);
		for (let i = 0; i <= 4; i++) {
			const v = (vmax * i) / 4;
			box.append(svg("line", { class: "gridline", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
			box.append(svg("text", { x: L - 4, y: y(v) + 4, "text-anchor": "end" }, fmt(v)));
		}
		box.append(svg("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }));
		box.append(svg("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));
		if (t1 > t0) box.append(svg("text", { x: L, y: H - 6 }, "-" + duration(t1 - t0)));
		box.append(svg("text", { x: W - R, y: H - 6, "text-anchor": "end" }, "now"));
		const legend = svg("g", { class: "legend" });
		let lx = L + 4;
		series.forEach((s, i) => {
			if (s.points.length > 0) {
				const d = s.points.map((p, j) => (j ? "L" : "M") + x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1)).join(" ");
				box.append(svg("path", { class: "line s" + i, d }));
			}
			const last = s.points.length ? s.points[s.points.length - 1][1] : 0;
			legend.append(svg("rect", { class: "s" + i, x: lx, y: 6, width: 10, height: 10 }));
			const label = s.name + " " + fmt(last);
			legend.append(svg("text", { x: lx + 14, y: 15 }, label));
			lx += 24 + label.length * 6.5;
		});
		box.append(legend);
	}

	// bars draws one bar per value, labelled (every second label when
	// sparse), with note at the top right. Each bar carries its label in
	// data-label and its value in data-value.
	function bars(box, labels, values, note, sparse) {
		const vmax = Math.max(1, ...values);
		const bw = (W - L - R) / values.length;
		const y = (v) => H - B - (v / vmax) * (H - T - B);
		for (let i = 0; i <= 4; i++) {
			const v = (vmax * i) / 4;
			box.append(svg("line", { class: "gridline", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
			box.append(svg("text", { x: L - 4, y: y(v) + 4, "text-anchor": "end" }, fmt(v)));
		}
		values.forEach((v, i) => {
			box.append(svg("rect", { class: "bar s0", x: L + i * bw + 2, y: y(v), width: Math.max(1, bw - 4), height: H - B - y(v), "data-label": labels[i], "data-value": v }));
			if (!sparse || i % 2 === 0) box.append(svg("text", { x: L + i * bw + bw / 2, y: H - 6, "text-anchor": "middle" }, labels[i]));
		});
		box.append(svg("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));
		box.append(svg("text", { x: W - R, y: 15, "text-anchor": "end" }, note));
	}

	// barChart draws a latency histogram's counts per bucket.
	function barChart(box, h0, h1) {
		box.replaceChildren();
		if (!h1 || !h1.buckets || h1.buckets.length === 0) return;
		const cum = h1.cumulative.map((c, i) => c - (h0 ? h0.cumulative[i] : 0));
		const count = h1.count - (h0 ? h0.count : 0);
		const per = cum.map((c, i) => c - (i ? cum[i - 1] : 0));
		per.push(count - (cum.length ? cum[cum.length - 1] : 0)); // beyond the last bucket
		const labels = h1.buckets.map((b) => "≤" + (b < 1 ? Math.round(b * 1000) + "ms" : b + "s"));
		labels.push(">" + h1.buckets[h1.buckets.length - 1] + "s");
		bars(box, labels, per, count + " observed", true);
	}

	// causeChart draws the aborts by cause, in the API's order (by name).
	function causeChart(box, byCause) {
		box.replaceChildren();
		const causes = Object.keys(byCause || {});
		if (causes.length === 0) return;
		const values = causes.map((c) => byCause[c]);
		bars(box, causes, values, values.reduce((a, b) => a + b, 0) + " aborted", false);
	}

	function rate(key) {
		const pts = [];
		for (let i = 1; i < snaps.length; i++) {
			const a = snaps[i - 1], b = snaps[i];
			const dt = (b.t - a.t) / 1000;
			if (dt > 0) pts.push([b.t, Math.max(0, (b[key] - a[key]) / dt)]);
		}
		return pts;
	}

	function meanLatency(key) {
		const pts = [];
		for (let i = 1; i < snaps.length; i++) {
			const a = snaps[i - 1][key], b = snaps[i][key];
			const n = b.count - a.count;
			if (n > 0) pts.push([snaps[i].t, ((b.sum - a.sum) / n) * 1000]);
		}
		return pts;
	}

	function renderStats(s) {
		const oldest = s.oldest_in_flight_seconds;
		const cards = [
			["begun", s.begun], ["committed", s.committed], ["aborted", s.aborted], ["in flight", s.in_flight],
			["oldest in flight", oldest === null ? "n/a" : duration(oldest * 1000)],
			["timed out", s.timeouts], ["resends", s.resends],
			["sagas completed", s.sagas_completed], ["sagas compensated", s.sagas_compensated], ["saga steps stuck", s.sagas_stuck],
			["recovered", s.recovered], ["orphans aborted", s.orphans_aborted], ["fenced", s.fenced],
		];
		$("stats").replaceChildren(...cards.map(([k, v]) =>
			el("div", { class: "card stat", dataset: { stat: k } }, el("div", { class: "v" }, v), el("div", { class: "k" }, k))));
	}

	async function refresh() {
		let s;
		try {
			s = await api("/api/stats");
			showError($("error"), null);
		} catch (e) {
			showError($("error"), e);
			return;
		}
		syncClock(s.at);
		s.t = Date.parse(s.at);
		snaps.push(s);
		if (snaps.length > keep) snaps.shift();
		renderStats(s);
		lineChart($("chart-rates"), [
			{ name: "begun", points: rate("begun") },
			{ name: "committed", points: rate("committed") },
			{ name: "aborted", points: rate("aborted") },
		]);
		lineChart($("chart-inflight"), [{ name: "in flight", points: snaps.map((x) => [x.t, x.in_flight]) }]);
		lineChart($("chart-oldest"), [{ name: "oldest (s)", points: snaps.filter((x) => x.oldest_in_flight_seconds !== null).map((x) => [x.t, x.oldest_in_flight_seconds]) }]);
		lineChart($("chart-latency"), [
			{ name: "decide", points: meanLatency("decide") },
			{ name: "complete", points: meanLatency("complete") },
			{ name: "write", points: meanLatency("write") },
		]);
		lineChart($("chart-saga-latency"), [{ name: "saga", points: meanLatency("saga") }]);
		causeChart($("chart-abort-causes"), s.aborted_by);
		barChart($("chart-decide-hist"), null, s.decide);
		barChart($("chart-complete-hist"), null, s.complete);
		barChart($("chart-write-hist"), null, s.write);
		barChart($("chart-saga-hist"), null, s.saga);
	}

	natstx.poll(refresh, 1000);
})();
