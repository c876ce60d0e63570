//! Story language model (see issue: story model).
