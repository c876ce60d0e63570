//! The ratings report: the seed's aggregate measures and inter-rater agreement, per model version,
//! with a Wilson interval on every percentage so that versions can be compared.
//!
//! Rules, applied per model version:
//! * Only the latest answer of a rater for the same (result, question, item) counts (the largest
//!   `answered_at`; on equal timestamps the later row): earlier answers are fixed mis-clicks.
//! * Rows with an unknown question, a value outside its scale, or an item that the question does not
//!   have (Q1: negative; Q2/Q3: not 0) are left out and counted in [`Report::skipped`].
//! * A hashtag is relevant if more than half of its raters answered "yes" (Q1 value 1).
//! * A story "has context" if more than half of its raters answered level 1 ("some") or above. This
//!   is the same as its lower median answer being ≥ 1, and it follows the seed's majority rule.
//! * The per-story Q2/Q3 distributions place each story at its lower median answer (with an even
//!   number of raters the lower of the two middle answers: a tie is not credited upwards).
//! * Agreement: Fleiss' κ on Q1 with one item per (result, hashtag); Krippendorff's α (ordinal) on
//!   Q2 and Q3 with one unit per result and one coder per rater.
//!
//! Intervals treat hashtags, stories and answers as independent draws, which is optimistic when the
//! same rater or image contributes several: read them as a guide, not a test.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::agreement::{fleiss_kappa, krippendorff_alpha, Agreement, Metric};
use crate::stats::{majority, wilson, Proportion, Z_95};
use crate::{Question, QuestionSet, RatingRow};

/// Agreement figures per question; `None` where undefined (too few items, or no variation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct QuestionAgreement {
    /// Fleiss' κ, items = (result, hashtag) pairs.
    pub q1: Option<Agreement>,
    /// Krippendorff's α (ordinal), units = results.
    pub q2: Option<Agreement>,
    /// Krippendorff's α (ordinal), units = results.
    pub q3: Option<Agreement>,
}

/// The measures of one model version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionReport {
    pub model_version: String,
    /// Results with at least one counted answer.
    pub results: usize,
    /// Distinct raters with at least one counted answer.
    pub raters: usize,
    /// Counted answers (after keeping each rater's latest answer).
    pub answers: usize,
    /// Rated hashtags judged relevant by a majority of their raters.
    pub hashtag_relevance: Proportion,
    /// Results whose top hashtag (item 0) is judged relevant by a majority.
    pub top_hashtag_relevance: Proportion,
    /// Stories where a majority answered Q2 "some context" or better.
    pub stories_with_context: Proportion,
    /// Share of Q2 answers at each level of the scale.
    pub q2_answers: Vec<Proportion>,
    /// Share of stories whose lower median Q2 answer is at each level.
    pub q2_stories: Vec<Proportion>,
    /// Share of Q3 answers at each level of the scale.
    pub q3_answers: Vec<Proportion>,
    /// Share of stories whose lower median Q3 answer is at each level.
    pub q3_stories: Vec<Proportion>,
    pub agreement: QuestionAgreement,
}

/// The whole report: one [`VersionReport`] per model version, sorted by version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The questions and scales the levels refer to.
    pub questions: QuestionSet,
    /// Normal quantile of the Wilson intervals (1.96 for 95%).
    pub z: f64,
    /// Rows left out as invalid (see the module documentation).
    pub skipped: usize,
    pub versions: Vec<VersionReport>,
}

/// (model version, rater, result, question, item): one counted answer per key.
type AnswerKey<'a> = (&'a str, i64, i64, Q, i32);

/// Which question a valid row answers.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Q {
    One,
    Two,
    Three,
}

impl Report {
    /// Builds the report with 95% Wilson intervals. To report one model version, pass only its rows.
    pub fn build(rows: &[RatingRow], questions: &QuestionSet) -> Report {
        Report::build_with_z(rows, questions, Z_95)
    }

    /// Builds the report with Wilson intervals at normal quantile `z`.
    pub fn build_with_z(rows: &[RatingRow], questions: &QuestionSet, z: f64) -> Report {
        let mut skipped = 0;
        // Latest answer per (version, rater, result, question, item).
        let mut latest: HashMap<AnswerKey, (i64, i32)> = HashMap::new();
        for row in rows {
            let Some(q) = classify(row, questions) else {
                skipped += 1;
                continue;
            };
            let key = (
                row.model_version.as_str(),
                row.rater_id,
                row.result_id,
                q,
                row.item,
            );
            match latest.get(&key) {
                Some(&(at, _)) if at > row.answered_at => {}
                _ => {
                    latest.insert(key, (row.answered_at, row.value));
                }
            }
        }

        let mut by_version: BTreeMap<&str, Vec<Answer>> = BTreeMap::new();
        for ((version, rater, result, q, item), (_, value)) in latest {
            by_version.entry(version).or_default().push(Answer {
                rater,
                result,
                q,
                item,
                // classify() checked the value is a level of its scale, hence non-negative.
                value: value as usize,
            });
        }
        let versions = by_version
            .into_iter()
            .map(|(version, answers)| version_report(version, &answers, questions, z))
            .collect();
        Report {
            questions: questions.clone(),
            z,
            skipped,
            versions,
        }
    }

    /// The measures of one model version, if it has counted answers.
    pub fn version(&self, model_version: &str) -> Option<&VersionReport> {
        self.versions
            .iter()
            .find(|v| v.model_version == model_version)
    }

    /// A plain-text table with one column per model version.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let level = if (self.z - Z_95).abs() < 1e-9 {
            "95% Wilson intervals".to_string()
        } else {
            format!("Wilson intervals at z = {}", self.z)
        };
        let _ = writeln!(
            out,
            "Human ratings by model version ({level}; each rater's latest answer counts)"
        );
        if self.versions.is_empty() {
            out.push_str("\nNo ratings yet.\n");
            if self.skipped > 0 {
                let _ = writeln!(out, "{} invalid rows left out.", self.skipped);
            }
            return out;
        }

        let q = &self.questions;
        let mut lines: Vec<(String, Vec<String>)> = Vec::new();
        let mut add = |label: String, cell: &dyn Fn(&VersionReport) -> String| {
            lines.push((label, self.versions.iter().map(cell).collect()));
        };
        add("results rated".into(), &|v| v.results.to_string());
        add("raters".into(), &|v| v.raters.to_string());
        add("answers".into(), &|v| v.answers.to_string());
        add("Q1 hashtags relevant (majority)".into(), &|v| {
            percent(&v.hashtag_relevance)
        });
        add("Q1 top hashtag relevant (majority)".into(), &|v| {
            percent(&v.top_hashtag_relevance)
        });
        let some = q.q2.scale.labels.get(1).map_or("level 1", String::as_str);
        add(format!("Q2 stories with {some} or more (majority)"), &|v| {
            percent(&v.stories_with_context)
        });
        type Levels = fn(&VersionReport) -> &Vec<Proportion>;
        let per_level: [(&Question, &str, Levels); 4] = [
            (&q.q2, "answers", |v| &v.q2_answers),
            (&q.q2, "stories (median)", |v| &v.q2_stories),
            (&q.q3, "answers", |v| &v.q3_answers),
            (&q.q3, "stories (median)", |v| &v.q3_stories),
        ];
        for (question, what, levels) in per_level {
            let id = question.id.to_uppercase();
            for (i, label) in question.scale.labels.iter().enumerate() {
                add(format!("{id} {what}: {label}"), &|v| {
                    levels(v).get(i).map_or("-".into(), percent)
                });
            }
        }
        add("Q1 agreement (Fleiss κ)".into(), &|v| {
            agreement(&v.agreement.q1)
        });
        add("Q2 agreement (Krippendorff α, ordinal)".into(), &|v| {
            agreement(&v.agreement.q2)
        });
        add("Q3 agreement (Krippendorff α, ordinal)".into(), &|v| {
            agreement(&v.agreement.q3)
        });

        let width = |s: &str| s.chars().count();
        let label_w = lines.iter().map(|(l, _)| width(l)).max().unwrap_or(0);
        let col_w: Vec<usize> = self
            .versions
            .iter()
            .enumerate()
            .map(|(i, v)| {
                lines
                    .iter()
                    .map(|(_, cells)| width(&cells[i]))
                    .chain([width(&v.model_version)])
                    .max()
                    .unwrap_or(0)
            })
            .collect();

        let row = |out: &mut String, label: &str, cells: &mut dyn Iterator<Item = &str>| {
            let _ = write!(out, "{label:label_w$}");
            for (cell, w) in cells.zip(&col_w) {
                let _ = write!(out, " | {cell:w$}");
            }
            // Trailing spaces from padding the last column are noise in terminals and diffs.
            let trimmed = out.trim_end_matches(' ').len();
            out.truncate(trimmed);
            out.push('\n');
        };
        out.push('\n');
        row(
            &mut out,
            "model version",
            &mut self.versions.iter().map(|v| v.model_version.as_str()),
        );
        out.push_str(&"-".repeat(label_w));
        for w in &col_w {
            let _ = write!(out, "-+-{}", "-".repeat(*w));
        }
        out.push('\n');
        for (label, cells) in &lines {
            row(&mut out, label, &mut cells.iter().map(String::as_str));
        }
        if self.skipped > 0 {
            let _ = writeln!(out, "\n{} invalid rows left out.", self.skipped);
        }
        out
    }
}

fn percent(p: &Proportion) -> String {
    if p.is_empty() {
        return "-".into();
    }
    format!(
        "{:.1}% [{:.1}, {:.1}] n={}",
        p.value * 100.0,
        p.low * 100.0,
        p.high * 100.0,
        p.n
    )
}

fn agreement(a: &Option<Agreement>) -> String {
    match a {
        Some(a) => format!("{:.3} ({} items, {} raters)", a.value, a.items, a.raters),
        None => "n/a".into(),
    }
}

/// One counted answer.
struct Answer {
    rater: i64,
    result: i64,
    q: Q,
    item: i32,
    value: usize,
}

/// Which question a row answers, or `None` if the row is invalid.
fn classify(row: &RatingRow, questions: &QuestionSet) -> Option<Q> {
    questions.validate(&row.question, row.value).ok()?;
    let q = if row.question == questions.q1.id {
        Q::One
    } else if row.question == questions.q2.id {
        Q::Two
    } else if row.question == questions.q3.id {
        Q::Three
    } else {
        return None;
    };
    let item_ok = match q {
        Q::One => row.item >= 0,
        Q::Two | Q::Three => row.item == 0,
    };
    item_ok.then_some(q)
}

fn version_report(
    version: &str,
    answers: &[Answer],
    questions: &QuestionSet,
    z: f64,
) -> VersionReport {
    let share = |k: usize, n: usize| wilson(k as u64, n as u64, z);
    let results: BTreeSet<i64> = answers.iter().map(|a| a.result).collect();
    let raters: BTreeSet<i64> = answers.iter().map(|a| a.rater).collect();

    // Q1: per (result, item), the raters and their answers.
    let q1_levels = questions.q1.scale.labels.len();
    let mut hashtags: BTreeMap<(i64, i32), Vec<(i64, usize)>> = BTreeMap::new();
    for a in answers.iter().filter(|a| a.q == Q::One) {
        hashtags
            .entry((a.result, a.item))
            .or_default()
            .push((a.rater, a.value));
    }
    let relevant = |votes: &[(i64, usize)]| {
        majority(votes.iter().filter(|(_, v)| *v == 1).count(), votes.len())
    };
    let hashtag_relevance = share(
        hashtags.values().filter(|v| relevant(v)).count(),
        hashtags.len(),
    );
    let tops: Vec<&Vec<(i64, usize)>> = hashtags
        .iter()
        .filter(|((_, item), _)| *item == 0)
        .map(|(_, v)| v)
        .collect();
    let top_hashtag_relevance = share(tops.iter().filter(|v| relevant(v)).count(), tops.len());
    let q1_agreement = {
        let pairable: Vec<&Vec<(i64, usize)>> =
            hashtags.values().filter(|v| v.len() >= 2).collect();
        let table: Vec<Vec<usize>> = pairable
            .iter()
            .map(|votes| {
                let mut row = vec![0; q1_levels];
                for &(_, v) in votes.iter() {
                    row[v] += 1;
                }
                row
            })
            .collect();
        fleiss_kappa(&table).map(|mut a| {
            // The count table cannot tell who rated; we can.
            a.raters = pairable
                .iter()
                .flat_map(|votes| votes.iter().map(|(r, _)| *r))
                .collect::<BTreeSet<_>>()
                .len();
            a
        })
    };

    let story = |q: Q, levels: usize| StoryStats::new(answers, q, levels);
    let q2 = story(Q::Two, questions.q2.scale.labels.len());
    let q3 = story(Q::Three, questions.q3.scale.labels.len());
    let stories_with_context = share(
        q2.medians.iter().filter(|&&m| m >= 1).count(),
        q2.medians.len(),
    );

    VersionReport {
        model_version: version.to_string(),
        results: results.len(),
        raters: raters.len(),
        answers: answers.len(),
        hashtag_relevance,
        top_hashtag_relevance,
        stories_with_context,
        q2_answers: q2.answer_shares(z),
        q2_stories: q2.story_shares(z),
        q3_answers: q3.answer_shares(z),
        q3_stories: q3.story_shares(z),
        agreement: QuestionAgreement {
            q1: q1_agreement,
            q2: q2.alpha,
            q3: q3.alpha,
        },
    }
}

/// Per-story aggregates of Q2 or Q3.
struct StoryStats {
    levels: usize,
    /// Answers at each level.
    answer_counts: Vec<usize>,
    /// Lower median answer of each story.
    medians: Vec<usize>,
    alpha: Option<Agreement>,
}

impl StoryStats {
    fn new(answers: &[Answer], q: Q, levels: usize) -> StoryStats {
        let mut answer_counts = vec![0; levels];
        let mut per_result: BTreeMap<i64, Vec<(i64, usize)>> = BTreeMap::new();
        for a in answers.iter().filter(|a| a.q == q) {
            answer_counts[a.value] += 1;
            per_result
                .entry(a.result)
                .or_default()
                .push((a.rater, a.value));
        }
        let medians = per_result
            .values()
            .map(|votes| {
                let mut values: Vec<usize> = votes.iter().map(|(_, v)| *v).collect();
                values.sort_unstable();
                values[(values.len() - 1) / 2]
            })
            .collect();

        // Units for α: only results with two or more raters can be paired; coders are the raters
        // of those results, one column each.
        let pairable: Vec<&Vec<(i64, usize)>> =
            per_result.values().filter(|v| v.len() >= 2).collect();
        let coders: Vec<i64> = pairable
            .iter()
            .flat_map(|votes| votes.iter().map(|(r, _)| *r))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let units: Vec<Vec<Option<u32>>> = pairable
            .iter()
            .map(|votes| {
                let mut unit = vec![None; coders.len()];
                for &(rater, value) in votes.iter() {
                    let column = coders.binary_search(&rater).expect("rater collected above");
                    unit[column] = Some(value as u32);
                }
                unit
            })
            .collect();
        StoryStats {
            levels,
            answer_counts,
            medians,
            alpha: krippendorff_alpha(&units, Metric::Ordinal),
        }
    }

    fn answer_shares(&self, z: f64) -> Vec<Proportion> {
        let total: usize = self.answer_counts.iter().sum();
        self.answer_counts
            .iter()
            .map(|&c| wilson(c as u64, total as u64, z))
            .collect()
    }

    fn story_shares(&self, z: f64) -> Vec<Proportion> {
        (0..self.levels)
            .map(|level| {
                let k = self.medians.iter().filter(|&&m| m == level).count();
                wilson(k as u64, self.medians.len() as u64, z)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(
        rater: i64,
        result: i64,
        version: &str,
        question: &str,
        item: i32,
        value: i32,
        at: i64,
    ) -> RatingRow {
        RatingRow {
            rater_id: rater,
            rater_name: format!("rater {rater}"),
            result_id: result,
            post_id: result * 10,
            model_version: version.into(),
            question: question.into(),
            item,
            hashtag: (question == "q1").then(|| format!("#tag{item}")),
            value,
            answered_at: at,
        }
    }

    /// A fixed example, version "v1", three raters (1, 2, 3), two results (10, 11):
    ///
    /// Q1, result 10: item 0 yes/yes/no (relevant), item 1 no/no/yes (not relevant);
    ///     result 11: item 0 yes/no (tie: not relevant), item 1 yes/yes (relevant).
    /// Q2, result 10: 2, 1, 0 (lower median 1: context); result 11: 0, 1 (lower median 0: none).
    /// Q3, result 10: 2, 2, 1 (median 2); result 11: 1, 1 (median 1).
    /// Rater 3 first clicked Q2 = 2 on result 10, then fixed it to 0 (only 0 counts).
    fn example() -> Vec<RatingRow> {
        let v = "v1";
        let mut rows = vec![
            row(1, 10, v, "q1", 0, 1, 1),
            row(2, 10, v, "q1", 0, 1, 1),
            row(3, 10, v, "q1", 0, 0, 1),
            row(1, 10, v, "q1", 1, 0, 1),
            row(2, 10, v, "q1", 1, 0, 1),
            row(3, 10, v, "q1", 1, 1, 1),
            row(1, 11, v, "q1", 0, 1, 1),
            row(2, 11, v, "q1", 0, 0, 1),
            row(1, 11, v, "q1", 1, 1, 1),
            row(2, 11, v, "q1", 1, 1, 1),
            row(1, 10, v, "q2", 0, 2, 1),
            row(2, 10, v, "q2", 0, 1, 1),
            row(3, 10, v, "q2", 0, 0, 5),
            row(1, 11, v, "q2", 0, 0, 1),
            row(2, 11, v, "q2", 0, 1, 1),
            row(1, 10, v, "q3", 0, 2, 1),
            row(2, 10, v, "q3", 0, 2, 1),
            row(3, 10, v, "q3", 0, 1, 1),
            row(1, 11, v, "q3", 0, 1, 1),
            row(2, 11, v, "q3", 0, 1, 1),
        ];
        // The mis-click, stored after the fix in row order but answered earlier.
        rows.push(row(3, 10, v, "q2", 0, 2, 4));
        rows
    }

    #[test]
    fn measures_on_a_fixed_example() {
        let r = Report::build(&example(), &QuestionSet::default());
        assert_eq!(r.skipped, 0);
        assert_eq!(r.versions.len(), 1);
        let v = &r.versions[0];
        assert_eq!(v.model_version, "v1");
        assert_eq!((v.results, v.raters, v.answers), (2, 3, 20));

        assert_eq!(
            (v.hashtag_relevance.successes, v.hashtag_relevance.n),
            (2, 4)
        );
        assert_eq!(
            (v.top_hashtag_relevance.successes, v.top_hashtag_relevance.n),
            (1, 2)
        );
        assert_eq!(
            (v.stories_with_context.successes, v.stories_with_context.n),
            (1, 2)
        );
        let counts = |ps: &[Proportion]| ps.iter().map(|p| (p.successes, p.n)).collect::<Vec<_>>();
        // Q2 answers: 0 (r3 fixed, r1 on 11), 1 (r2 twice), 2 (r1 on 10).
        assert_eq!(counts(&v.q2_answers), vec![(2, 5), (2, 5), (1, 5)]);
        assert_eq!(counts(&v.q2_stories), vec![(1, 2), (1, 2), (0, 2)]);
        assert_eq!(counts(&v.q3_answers), vec![(0, 5), (3, 5), (2, 5)]);
        assert_eq!(counts(&v.q3_stories), vec![(0, 2), (1, 2), (1, 2)]);
        assert!((v.hashtag_relevance.value - 0.5).abs() < 1e-12);
        assert!(v.hashtag_relevance.low < 0.5 && v.hashtag_relevance.high > 0.5);
    }

    #[test]
    fn agreement_on_a_fixed_example() {
        let v = Report::build(&example(), &QuestionSet::default()).versions[0].clone();

        // Q1 table (no, yes): [1,2], [2,1], [1,1], [0,2]. P_i = 1/3, 1/3, 0, 1; P̄ = 5/12.
        // p_no = 4/10, p_yes = 6/10, P_e = 0.52. κ = (5/12 − 0.52)/0.48 = −0.2152777…
        let q1 = v.agreement.q1.unwrap();
        assert!(
            (q1.value - (5.0 / 12.0 - 0.52) / 0.48).abs() < 1e-12,
            "{}",
            q1.value
        );
        assert_eq!((q1.items, q1.raters, q1.ratings), (4, 3, 10));

        // Q2 units: result 10 → (2, 1, 0), result 11 → (0, 1). Same as computing α directly.
        let expected = krippendorff_alpha(
            &[
                vec![Some(2), Some(1), Some(0)],
                vec![Some(0), Some(1), None],
            ],
            Metric::Ordinal,
        )
        .unwrap();
        assert_eq!(v.agreement.q2, Some(expected));
        // Hand check of that α: values 0,1,2 each with n_c: result 10 gives each ordered pair 1/2,
        // result 11 gives o01 = o10 = 1. o00 = 0, o01 = o10 = 1.5, o02 = o20 = 0.5, o12 = o21 = 0.5,
        // n_0 = 2, n_1 = 2, n_2 = 1, n = 5. Ordinal δ²: (0,1) = (4 − 2)² = 4,
        // (1,2) = (3 − 1.5)² = 2.25, (0,2) = (5 − 1.5)² = 12.25.
        // D_o·n = 2·(1.5·4 + 0.5·12.25 + 0.5·2.25) = 26.5;
        // Σ n_c n_k δ² = 2·(2·2·4 + 2·1·12.25 + 2·1·2.25) = 90. α = 1 − 4·26.5/90 = −0.1777…
        assert!((expected.value - (1.0 - 4.0 * 26.5 / 90.0)).abs() < 1e-12);
        assert_eq!(
            (expected.items, expected.raters, expected.ratings),
            (2, 3, 5)
        );

        // Q3 units: (2, 2, 1) and (1, 1). o22 = 1, o12 = o21 = 1, o11 = 2; n_1 = 3, n_2 = 2, n = 5.
        // With two values α reduces to the nominal form: 1 − 4 · 2 / (2 · 3 · 2) = 1/3.
        let q3 = v.agreement.q3.unwrap();
        assert_eq!((q3.items, q3.raters, q3.ratings), (2, 3, 5));
        assert!((q3.value - 1.0 / 3.0).abs() < 1e-12, "{}", q3.value);
    }

    #[test]
    fn latest_answer_wins_regardless_of_row_order() {
        let mut rows = example();
        rows.reverse();
        let a = Report::build(&rows, &QuestionSet::default());
        let b = Report::build(&example(), &QuestionSet::default());
        assert_eq!(a, b);
        // Dropping the fix makes the mis-click count: result 10's Q2 becomes (2, 1, 2).
        let without_fix: Vec<RatingRow> = example()
            .into_iter()
            .filter(|r| !(r.rater_id == 3 && r.question == "q2" && r.answered_at == 5))
            .collect();
        let c = Report::build(&without_fix, &QuestionSet::default());
        let counts: Vec<u64> = c.versions[0]
            .q2_answers
            .iter()
            .map(|p| p.successes)
            .collect();
        assert_eq!(counts, vec![1, 2, 2]);
    }

    #[test]
    fn versions_are_separate_and_sorted() {
        let mut rows = example();
        for r in example() {
            rows.push(RatingRow {
                model_version: "v0".into(),
                result_id: r.result_id + 100,
                // In v0 everybody says yes / clear / strongly.
                value: if r.question == "q1" { 1 } else { 2 },
                ..r
            });
        }
        let r = Report::build(&rows, &QuestionSet::default());
        let names: Vec<&str> = r
            .versions
            .iter()
            .map(|v| v.model_version.as_str())
            .collect();
        assert_eq!(names, vec!["v0", "v1"]);
        let v0 = r.version("v0").unwrap();
        assert_eq!(v0.hashtag_relevance.successes, 4);
        assert_eq!(v0.stories_with_context.successes, 2);
        // Unanimous and invariant: agreement undefined, not 1.
        assert_eq!(v0.agreement.q1, None);
        assert_eq!(v0.agreement.q3, None);
        // v1 unchanged by v0's presence.
        let alone = Report::build(&example(), &QuestionSet::default());
        assert_eq!(r.version("v1"), alone.version("v1"));
        assert!(r.version("v9").is_none());
    }

    #[test]
    fn invalid_rows_are_skipped_and_counted() {
        let mut rows = example();
        rows.push(row(1, 10, "v1", "q4", 0, 0, 1));
        rows.push(row(1, 10, "v1", "q2", 0, 3, 9));
        rows.push(row(1, 10, "v1", "q1", 0, -1, 9));
        rows.push(row(1, 10, "v1", "q3", 1, 0, 9));
        rows.push(row(1, 10, "v1", "q1", -2, 1, 9));
        let r = Report::build(&rows, &QuestionSet::default());
        assert_eq!(r.skipped, 5);
        assert_eq!(
            r.versions,
            Report::build(&example(), &QuestionSet::default()).versions
        );
    }

    #[test]
    fn text_and_json() {
        let mut rows = example();
        rows.extend(example().into_iter().map(|r| RatingRow {
            model_version: "v2-longer-name".into(),
            ..r
        }));
        let r = Report::build(&rows, &QuestionSet::default());
        let text = r.to_text();
        assert!(text.contains("95% Wilson intervals"));
        let header = text
            .lines()
            .find(|l| l.starts_with("model version"))
            .unwrap();
        assert!(header.contains("| v1") && header.contains("| v2-longer-name"));
        assert!(text.lines().all(|l| !l.ends_with(' ')));
        let relevant = text
            .lines()
            .find(|l| l.starts_with("Q1 hashtags relevant"))
            .unwrap();
        // 2 of 4 in both versions, side by side.
        assert_eq!(relevant.matches("50.0% [").count(), 2, "{relevant}");
        assert!(relevant.contains("n=4"));
        assert!(text.contains("Q2 answers: some context"));
        assert!(text.contains("Q3 stories (median): strongly"));
        assert!(text.contains("Q1 agreement (Fleiss κ)"));
        assert!(text.contains("(4 items, 3 raters)"));
        // Columns line up: every table line has its separators at the same char positions.
        let table: Vec<&str> = text.lines().filter(|l| l.contains(" | ")).collect();
        let bar = |l: &str| l.chars().position(|c| c == '|').unwrap();
        assert!(table.iter().all(|l| bar(l) == bar(table[0])));

        // serde_json may move a float by one unit in the last place on parsing; compare the JSON
        // trees with a tolerance instead of bit for bit.
        fn same(a: &serde_json::Value, b: &serde_json::Value) -> bool {
            use serde_json::Value as V;
            match (a, b) {
                (V::Number(x), V::Number(y)) => {
                    (x.as_f64().unwrap() - y.as_f64().unwrap()).abs() < 1e-12
                }
                (V::Array(x), V::Array(y)) => {
                    x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
                }
                (V::Object(x), V::Object(y)) => {
                    x.len() == y.len()
                        && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
                }
                _ => a == b,
            }
        }
        let json = serde_json::to_value(&r).unwrap();
        let back: Report = serde_json::from_value(json.clone()).unwrap();
        assert!(same(&serde_json::to_value(&back).unwrap(), &json));
        assert_eq!(back.versions[1].model_version, "v2-longer-name");
        assert_eq!(back.versions[0].agreement.q1.unwrap().items, 4);

        let empty = Report::build(&[], &QuestionSet::default());
        assert!(empty.versions.is_empty());
        assert!(empty.to_text().contains("No ratings yet."));
    }
}
