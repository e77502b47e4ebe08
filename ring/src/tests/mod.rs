//! Tests of the two ring halves together and against hostile mocks.

mod back_hostile;
mod concurrent;
mod edges;
mod front_hostile;
mod proptests;
