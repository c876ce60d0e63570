//! An SVG chart of the Q2 and Q3 answer distributions per model version, for the admin page.
//!
//! Hand-written SVG: a few rectangles and labels do not justify a plotting library, and plain SVG
//! text stays selectable and readable by screen readers. All text from outside (version names,
//! question wording) is XML-escaped.
use std::fmt::Write as _;

use crate::report::{Report, VersionReport};
use crate::stats::Proportion;
use crate::QuestionSet;

/// Height in pixels of a 100% bar.
pub const PLOT_HEIGHT: f64 = 180.0;

const LEFT: f64 = 56.0;
const RIGHT: f64 = 16.0;
const MIN_PLOT_WIDTH: f64 = 480.0;
const GROUP_GAP: f64 = 28.0;
const MIN_BAR: f64 = 8.0;
const MAX_BAR: f64 = 36.0;
const BAR_GAP: f64 = 2.0;
const PANEL_TITLE: f64 = 26.0;
const PANEL_BELOW: f64 = 40.0;
const LEGEND_ROW: f64 = 20.0;

/// Okabe–Ito colours: distinguishable with the common colour-vision deficiencies.
const COLOURS: [&str; 8] = [
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000",
];

type Levels = fn(&VersionReport) -> &Vec<Proportion>;

/// Grouped bars: one panel per question (Q2, Q3), one group per answer level, one bar per model
/// version (the share of that version's answers at that level), with its 95% interval as a whisker.
pub fn distribution_svg(report: &Report, questions: &QuestionSet) -> String {
    let versions = &report.versions;
    let panels: [(&crate::Question, Levels); 2] = [
        (&questions.q2, |v| &v.q2_answers),
        (&questions.q3, |v| &v.q3_answers),
    ];
    let max_levels = panels
        .iter()
        .map(|(q, _)| q.scale.labels.len())
        .max()
        .unwrap_or(1)
        .max(1);
    let n_versions = versions.len().max(1);
    let plot_width = MIN_PLOT_WIDTH.max(
        max_levels as f64 * n_versions as f64 * (MIN_BAR + BAR_GAP)
            + (max_levels + 1) as f64 * GROUP_GAP,
    );
    let width = LEFT + plot_width + RIGHT;

    // Legend entries flow left to right and wrap; widths estimated from the character count.
    let mut legend = Vec::new();
    let (mut lx, mut ly) = (LEFT, 0usize);
    for (i, v) in versions.iter().enumerate() {
        let w = 14.0 + 6.0 + 7.0 * v.model_version.chars().count() as f64 + 18.0;
        if lx + w > width - RIGHT && lx > LEFT {
            lx = LEFT;
            ly += 1;
        }
        legend.push((lx, ly, i));
        lx += w;
    }
    let legend_rows = if versions.is_empty() { 0 } else { ly + 1 };
    let top = 40.0 + legend_rows as f64 * LEGEND_ROW + 8.0;
    let panel_height = PANEL_TITLE + PLOT_HEIGHT + PANEL_BELOW;
    let height = top + panels.len() as f64 * panel_height;

    let title = "Answer distributions per model version";
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-labelledby="ratings-chart-title ratings-chart-desc" font-family="sans-serif" font-size="12">"#,
        w = fmt(width),
        h = fmt(height)
    );
    let _ = write!(
        svg,
        r#"<title id="ratings-chart-title">{}</title><desc id="ratings-chart-desc">{}</desc>"#,
        esc(title),
        esc(&describe(report, &panels))
    );
    let _ = write!(
        svg,
        r##"<rect width="100%" height="100%" fill="#ffffff"/><text x="{}" y="24" font-size="16" font-weight="bold">{}</text>"##,
        fmt(LEFT),
        esc(title)
    );
    if versions.is_empty() {
        let _ = write!(
            svg,
            r##"<text x="{}" y="{}" fill="#555555">No ratings yet.</text></svg>"##,
            fmt(LEFT),
            fmt(top + PANEL_TITLE)
        );
        return svg;
    }

    for &(x, row, i) in &legend {
        let y = 40.0 + row as f64 * LEGEND_ROW;
        let _ = write!(
            svg,
            r#"<g class="legend"><rect class="swatch" x="{}" y="{}" width="14" height="14" fill="{}"/><text x="{}" y="{}">{}</text></g>"#,
            fmt(x),
            fmt(y - 11.0),
            COLOURS[i % COLOURS.len()],
            fmt(x + 20.0),
            fmt(y),
            esc(&versions[i].model_version)
        );
    }

    for (p, (question, levels)) in panels.iter().enumerate() {
        let y0 = top + p as f64 * panel_height;
        let base = y0 + PANEL_TITLE + PLOT_HEIGHT;
        let labels = &question.scale.labels;
        let _ = write!(
            svg,
            r#"<g class="panel" data-question="{}"><text x="{}" y="{}" font-weight="bold">{}: {} (share of answers, lines: Wilson intervals)</text>"#,
            esc(&question.id),
            fmt(LEFT),
            fmt(y0 + 16.0),
            esc(&question.id.to_uppercase()),
            esc(&question.text)
        );
        // Grid lines and y labels every 25%.
        for tick in 0..=4 {
            let y = base - PLOT_HEIGHT * tick as f64 / 4.0;
            let _ = write!(
                svg,
                r##"<line x1="{}" y1="{y}" x2="{}" y2="{y}" stroke="{}" stroke-width="1"/><text x="{}" y="{}" text-anchor="end" fill="#555555">{}%</text>"##,
                fmt(LEFT),
                fmt(LEFT + plot_width),
                if tick == 0 { "#333333" } else { "#dddddd" },
                fmt(LEFT - 6.0),
                fmt(y + 4.0),
                tick * 25,
                y = fmt(y)
            );
        }
        let n_levels = labels.len().max(1);
        let group_width = (plot_width - (n_levels + 1) as f64 * GROUP_GAP) / n_levels as f64;
        let bar = (group_width / versions.len() as f64 - BAR_GAP).clamp(MIN_BAR, MAX_BAR);
        let used = versions.len() as f64 * (bar + BAR_GAP) - BAR_GAP;
        for (l, label) in labels.iter().enumerate() {
            let gx = LEFT + GROUP_GAP + l as f64 * (group_width + GROUP_GAP);
            let start = gx + (group_width - used) / 2.0;
            for (i, v) in versions.iter().enumerate() {
                let share = levels(v).get(l).copied().unwrap_or(Proportion::new(0, 0));
                let h = PLOT_HEIGHT * share.value;
                let x = start + i as f64 * (bar + BAR_GAP);
                let tip = if share.is_empty() {
                    format!("{}, {label}: no answers", v.model_version)
                } else {
                    format!(
                        "{}, {label}: {:.1}% of {} answers (interval {:.1}–{:.1}%)",
                        v.model_version,
                        share.value * 100.0,
                        share.n,
                        share.low * 100.0,
                        share.high * 100.0
                    )
                };
                let _ = write!(
                    svg,
                    r#"<rect class="bar" data-question="{}" data-version="{}" data-level="{l}" data-share="{}" x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{}</title></rect>"#,
                    esc(&question.id),
                    esc(&v.model_version),
                    share.value,
                    fmt(x),
                    fmt(base - h),
                    fmt(bar),
                    fmt(h),
                    COLOURS[i % COLOURS.len()],
                    esc(&tip)
                );
                if !share.is_empty() {
                    let cx = x + bar / 2.0;
                    let _ = write!(
                        svg,
                        r##"<line class="ci" x1="{cx}" y1="{}" x2="{cx}" y2="{}" stroke="#333333" stroke-width="1"/>"##,
                        fmt(base - PLOT_HEIGHT * share.low),
                        fmt(base - PLOT_HEIGHT * share.high),
                        cx = fmt(cx)
                    );
                }
            }
            let _ = write!(
                svg,
                r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
                fmt(gx + group_width / 2.0),
                fmt(base + 18.0),
                esc(label)
            );
        }
        svg.push_str("</g>");
    }
    svg.push_str("</svg>");
    svg
}

/// The chart's numbers as a sentence, for screen readers.
fn describe(report: &Report, panels: &[(&crate::Question, Levels); 2]) -> String {
    if report.versions.is_empty() {
        return "No ratings yet.".into();
    }
    let mut parts = Vec::new();
    for v in &report.versions {
        let mut part = format!("{}:", v.model_version);
        for (question, levels) in panels {
            let shares = levels(v);
            let n = shares.first().map_or(0, |p| p.n);
            let levels: Vec<String> = question
                .scale
                .labels
                .iter()
                .zip(shares)
                .map(|(label, p)| format!("{label} {:.1}%", p.value * 100.0))
                .collect();
            let _ = write!(
                part,
                " {} {} ({n} answers);",
                question.id.to_uppercase(),
                levels.join(", ")
            );
        }
        parts.push(part.trim_end_matches(';').to_string());
    }
    format!(
        "Share of answers at each level, per model version. {}.",
        parts.join(". ")
    )
}

/// Coordinates with at most two decimals, no trailing zeros.
fn fmt(x: f64) -> String {
    let s = format!("{x:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.into()
    }
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters other than tab/newline are not allowed in XML 1.0 at all.
            c if c.is_control() && c != '\t' && c != '\n' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RatingRow;

    fn rows(version: &str, q2: &[i32], q3: &[i32]) -> Vec<RatingRow> {
        let mk = |question: &str, i: usize, value: i32| RatingRow {
            rater_id: 1,
            rater_name: "r".into(),
            result_id: i as i64,
            post_id: 0,
            model_version: version.into(),
            question: question.into(),
            item: 0,
            hashtag: None,
            value,
            answered_at: 0,
        };
        q2.iter()
            .enumerate()
            .map(|(i, &v)| mk("q2", i, v))
            .chain(q3.iter().enumerate().map(|(i, &v)| mk("q3", i, v)))
            .collect()
    }

    /// Attributes of every element whose opening tag starts with `prefix`.
    fn elements(svg: &str, prefix: &str) -> Vec<Vec<(String, String)>> {
        svg.match_indices(prefix)
            .map(|(at, _)| {
                let tag = &svg[at..at + svg[at..].find('>').unwrap()];
                let mut attrs = Vec::new();
                let mut rest = tag;
                while let Some(eq) = rest.find("=\"") {
                    let name = rest[..eq].rsplit(' ').next().unwrap().to_string();
                    let after = &rest[eq + 2..];
                    let end = after.find('"').unwrap();
                    attrs.push((name, after[..end].to_string()));
                    rest = &after[end + 1..];
                }
                attrs
            })
            .collect()
    }

    fn attr<'a>(attrs: &'a [(String, String)], name: &str) -> &'a str {
        &attrs.iter().find(|(n, _)| n == name).unwrap().1
    }

    /// Tags open and close in order (a small well-formedness check).
    fn assert_balanced(svg: &str) {
        let mut stack = Vec::new();
        let mut rest = svg;
        while let Some(open) = rest.find('<') {
            let close = open + rest[open..].find('>').unwrap();
            let tag = &rest[open + 1..close];
            let name = |t: &str| t.split([' ', '/']).next().unwrap().to_string();
            if let Some(closing) = tag.strip_prefix('/') {
                assert_eq!(stack.pop().as_deref(), Some(closing), "at {tag}");
            } else if !tag.ends_with('/') {
                stack.push(name(tag));
            }
            // Text between tags holds no raw '<' or unescaped '&'.
            let text_end = rest[close..].find('<').map_or(rest.len(), |i| close + i);
            let text = &rest[close + 1..text_end];
            for (i, _) in text.match_indices('&') {
                let entity = &text[i..];
                assert!(
                    ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;"]
                        .iter()
                        .any(|e| entity.starts_with(e)),
                    "raw & in {text}"
                );
            }
            rest = &rest[close + 1..];
        }
        assert!(stack.is_empty(), "unclosed {stack:?}");
    }

    #[test]
    fn bars_follow_the_shares() {
        let questions = QuestionSet::default();
        let mut all = rows("v1", &[0, 1, 1, 2], &[2, 2, 2, 1]);
        all.extend(rows("v2 <new> & \"better\"", &[2, 2, 2, 2], &[0, 1, 2, 2]));
        let report = Report::build(&all, &questions);
        let svg = distribution_svg(&report, &questions);

        assert!(svg.starts_with("<svg "));
        assert!(svg.ends_with("</svg>"));
        assert!(svg.contains("<title id=\"ratings-chart-title\">"));
        assert!(svg.contains("<desc id=\"ratings-chart-desc\">"));
        assert_balanced(&svg);
        assert!(svg.contains(">v1</text>"));
        assert!(svg.contains("v2 &lt;new&gt; &amp; &quot;better&quot;"));
        assert!(!svg.contains("<new>"));
        for label in questions
            .q2
            .scale
            .labels
            .iter()
            .chain(&questions.q3.scale.labels)
        {
            assert!(svg.contains(&format!(">{label}</text>")), "{label}");
        }

        let bars = elements(&svg, "<rect class=\"bar\"");
        // 2 questions × 3 levels × 2 versions.
        assert_eq!(bars.len(), 12);
        for bar in &bars {
            let version = report
                .versions
                .iter()
                .find(|v| esc(&v.model_version) == attr(bar, "data-version"))
                .unwrap();
            let level: usize = attr(bar, "data-level").parse().unwrap();
            let shares = match attr(bar, "data-question") {
                "q2" => &version.q2_answers,
                "q3" => &version.q3_answers,
                q => panic!("unexpected question {q}"),
            };
            let height: f64 = attr(bar, "height").parse().unwrap();
            assert!(
                (height - PLOT_HEIGHT * shares[level].value).abs() < 0.01,
                "{bar:?}"
            );
            // Bars stand on the same base line.
            let y: f64 = attr(bar, "y").parse().unwrap();
            assert!(y >= 0.0);
        }
        // v1's Q2 "some context" is 2 of 4 answers: half height.
        let half = bars
            .iter()
            .find(|b| {
                attr(b, "data-version") == "v1"
                    && attr(b, "data-question") == "q2"
                    && attr(b, "data-level") == "1"
            })
            .unwrap();
        assert_eq!(attr(half, "height"), fmt(PLOT_HEIGHT / 2.0));
        // Every non-empty bar has its interval whisker.
        assert_eq!(elements(&svg, "<line class=\"ci\"").len(), 12);
        // The description carries the numbers for screen readers.
        assert!(svg.contains(
            "v1: Q2 no context 25.0%, some context 50.0%, clear context 25.0% (4 answers)"
        ));
    }

    #[test]
    fn empty_report_still_renders() {
        let questions = QuestionSet::default();
        let svg = distribution_svg(&Report::build(&[], &questions), &questions);
        assert_balanced(&svg);
        assert!(svg.contains("No ratings yet."));
        assert!(elements(&svg, "<rect class=\"bar\"").is_empty());
    }

    #[test]
    fn many_versions_widen_the_chart_and_wrap_the_legend() {
        let questions = QuestionSet::default();
        let mut all = Vec::new();
        for i in 0..30 {
            all.extend(rows(&format!("model-version-{i:02}"), &[i % 3], &[2]));
        }
        let report = Report::build(&all, &questions);
        let svg = distribution_svg(&report, &questions);
        assert_balanced(&svg);
        let root = &elements(&svg, "<svg ")[0];
        let width: f64 = attr(root, "width").parse().unwrap();
        assert!(width > LEFT + MIN_PLOT_WIDTH + RIGHT);
        let legend = elements(&svg, "<rect class=\"swatch\"");
        assert_eq!(legend.len(), 30);
        let rows: std::collections::BTreeSet<&str> = legend.iter().map(|l| attr(l, "y")).collect();
        assert!(rows.len() > 1);
        // Bars never overflow the plot area.
        for bar in elements(&svg, "<rect class=\"bar\"") {
            let x: f64 = attr(&bar, "x").parse().unwrap();
            let w: f64 = attr(&bar, "width").parse().unwrap();
            assert!(
                x >= LEFT && x + w <= width - RIGHT + 0.01,
                "{x} {w} {width}"
            );
        }
    }

    #[test]
    fn control_characters_are_replaced() {
        assert_eq!(esc("a\u{1}b<"), "a\u{FFFD}b&lt;");
        assert_eq!(fmt(12.0), "12");
        assert_eq!(fmt(12.345), "12.35");
        assert_eq!(fmt(-0.001), "0");
    }
}
