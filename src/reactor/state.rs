//! Typed state shared by every callback of a reactor (calloop's `&mut Data`),
//! instead of an `Rc<RefCell<_>>` cloned into each protocol by its factory.

use std::any::{Any, TypeId};

use crate::Reactor;

/// One value of each type, found by its type.
#[derive(Default)]
pub(crate) struct States(Vec<(TypeId, Box<dyn Any>)>);

impl std::fmt::Debug for States {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} value(s)", self.0.len())
    }
}

impl States {
    fn find<S: 'static>(&mut self) -> Option<&mut S> {
        let id = TypeId::of::<S>();
        let (_, value) = self.0.iter_mut().find(|(t, _)| *t == id)?;
        value.downcast_mut()
    }
}

impl Reactor {
    /// Makes `state` reachable from every callback of this reactor as
    /// [`Context::state`](crate::Context::state) (and
    /// [`Reactor::state`]), one value per type; returns the value of that
    /// type it replaces. Callbacks run one at a time on the reactor's
    /// thread, so no lock and no `RefCell` is needed: the borrow ends with
    /// the expression that takes it. Dropped with the reactor.
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use sockloop::Reactor;
    ///
    /// #[derive(Default)]
    /// struct Db(HashMap<Vec<u8>, Vec<u8>>);
    ///
    /// let mut reactor = Reactor::new()?;
    /// reactor.set_state(Db::default());
    /// reactor.state::<Db>().0.insert(b"k".to_vec(), b"v".to_vec());
    /// assert_eq!(reactor.try_state::<Db>().unwrap().0.len(), 1);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_state<S: 'static>(&mut self, state: S) -> Option<S> {
        if let Some(value) = self.states.find::<S>() {
            return Some(std::mem::replace(value, state));
        }
        self.states.0.push((TypeId::of::<S>(), Box::new(state)));
        None
    }

    /// The reactor's value of type `S`, created with `S::default()` the
    /// first time it is asked for (see [`set_state`](Reactor::set_state)).
    #[inline]
    pub fn state<S: Default + 'static>(&mut self) -> &mut S {
        let id = TypeId::of::<S>();
        let states = &mut self.states.0;
        let at = match states.iter().position(|(t, _)| *t == id) {
            Some(at) => at,
            None => {
                states.push((id, Box::new(S::default())));
                states.len() - 1
            }
        };
        states[at]
            .1
            .downcast_mut()
            .expect("stored under its own type id")
    }

    /// The reactor's value of type `S`, if it has one.
    pub fn try_state<S: 'static>(&mut self) -> Option<&mut S> {
        self.states.find::<S>()
    }
}
