//! Held-out evaluation of the Instagram hashtag expansion.
use hashtale_train::expand_eval::{evaluate, is_held_out, split};

#[test]
fn split_holds_out_every_tenth_post() {
    let posts: Vec<usize> = (0..25).collect();
    let (train, test) = split(&posts);
    assert_eq!(test, [&9, &19]);
    assert_eq!(train.len(), 23);
    assert!(is_held_out(9) && !is_held_out(10));
}

#[test]
fn evaluation_beats_the_prior_on_a_structured_corpus() {
    // Two communities that never mix, plus a popular generic tag: co-occurrence must find the
    // right community, the prior cannot.
    let mut posts: Vec<Vec<String>> = Vec::new();
    for i in 0..200 {
        let tags: &[&str] = match i % 4 {
            0 => &["dog", "puppy", "dogsofinstagram"],
            1 => &["food", "yummy", "instafood"],
            2 => &["love", "me"],
            _ => &["love", "selfie", "me"],
        };
        posts.push(tags.iter().map(|t| t.to_string()).collect());
    }
    let r = evaluate(&posts, 5, 10.0, 1);
    assert_eq!((r.posts, r.heldout_posts, r.train_posts), (200, 20, 180));
    assert_eq!(r.eligible_posts, 20);
    // Held-out posts are 9, 19, …: alternately the food and the selfie kind, 3 tags each.
    assert_eq!(r.model.queries, 20 * 3);
    // Every other tag of a post is always among the model's 5: recall 1.
    assert!((r.model.recall - 1.0).abs() < 1e-12, "{r:?}");
    assert!(r.prior.recall < r.model.recall);
    assert!(r.model.precision > r.prior.precision);
    assert_eq!(r.model_first_tag.queries, 20);
}
