//! The built-in web inbox (`GET /api/v1/inbox/{party_id}`): the message is
//! kept by o2flow, written with the outbox row's completion.

use futures::future::BoxFuture;

use super::{Deliver, Delivered, DeliveryError, Outgoing};

pub struct Inbox;

impl Deliver for Inbox {
    fn deliver<'a>(
        &'a self,
        message: &'a Outgoing<'a>,
    ) -> BoxFuture<'a, Result<Delivered, DeliveryError>> {
        Box::pin(async move {
            Ok(Delivered::Inbox {
                party_id: message.to.id.clone(),
                template: message.template.to_owned(),
                title: message.message.title.clone(),
                body: message.message.body.clone(),
            })
        })
    }
}
