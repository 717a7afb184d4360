//! Clients of the loop that hold work for its connections (the offload
//! thread pool, a process pool): the reactor knows them only through this
//! trait. A connection counts the answers it waits for (`pending_work`);
//! when it closes with some still due, every client is told to forget its
//! work, and when the reactor goes, every client is stopped while the loop
//! can still deliver the answers.

use std::any::Any;
use std::rc::{Rc, Weak};

use crate::{ConnId, Reactor};

/// Something outside the reactor that holds work for connections.
pub(crate) trait Client {
    /// Connection `id` closed with work still due: drop what waits for it.
    fn forget(&self, reactor: &mut Reactor, id: ConnId);

    /// The reactor is being dropped: answer or drop the work still held
    /// (`hurry`: [`Reactor::stop_now`] was called, wait for nothing).
    fn stop(&self, _reactor: &mut Reactor, _hurry: bool) {}
}

/// A reactor's clients.
#[derive(Default)]
pub(crate) struct Clients {
    /// Every client, owned elsewhere (by the user's handles) or below.
    told: Vec<Weak<dyn Client>>,
    /// Clients the reactor owns, one per type (the offload thread pool):
    /// they live as long as the reactor.
    owned: Vec<Rc<dyn Any>>,
}

impl Reactor {
    /// Tells `client` of closes and of the reactor's end, while it lives.
    pub(crate) fn add_client(&mut self, client: Weak<dyn Client>) {
        self.clients.told.retain(|c| c.strong_count() > 0);
        self.clients.told.push(client);
    }

    /// The client of type `T` this reactor owns, made by `make` at the first
    /// call.
    pub(crate) fn owned_client<T: Client + 'static>(
        &mut self,
        make: impl FnOnce(&Reactor) -> T,
    ) -> Rc<T> {
        if let Some(found) = self
            .clients
            .owned
            .iter()
            .find_map(|c| c.clone().downcast::<T>().ok())
        {
            return found;
        }
        let client = Rc::new(make(self));
        self.clients.owned.push(client.clone());
        let told: Rc<dyn Client> = client.clone();
        self.add_client(Rc::downgrade(&told));
        client
    }

    /// The client of type `T` this reactor owns, if it made one.
    pub(crate) fn find_client<T: Client + 'static>(&self) -> Option<Rc<T>> {
        self.clients
            .owned
            .iter()
            .find_map(|c| c.clone().downcast::<T>().ok())
    }

    /// Connection `id` closed with work still due: every client drops it.
    pub(crate) fn forget_work(&mut self, id: ConnId) {
        for client in self.live_clients() {
            client.forget(self, id);
        }
    }

    /// At the reactor's drop, before its handle is cut off (answers come
    /// back as commands).
    pub(crate) fn stop_clients(&mut self, hurry: bool) {
        for client in self.live_clients() {
            client.stop(self, hurry);
        }
    }

    fn live_clients(&mut self) -> Vec<Rc<dyn Client>> {
        self.clients.told.retain(|c| c.strong_count() > 0);
        self.clients.told.iter().filter_map(Weak::upgrade).collect()
    }
}
