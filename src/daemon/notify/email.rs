//! Delivery by email over SMTP.

use super::*;

impl EmailSink {
    pub(super) fn transport(
        &self,
        password: Option<String>,
        timeout: Duration,
    ) -> Result<lettre::SmtpTransport, String> {
        use lettre::transport::smtp::{authentication::Credentials, extension::ClientId};
        install_tls_provider();
        let builder = match self.security {
            SmtpSecurity::Starttls => lettre::SmtpTransport::starttls_relay(&self.server)
                .map_err(|e| error_chain(&e))?
                .port(self.port.unwrap_or(587)),
            SmtpSecurity::Tls => lettre::SmtpTransport::relay(&self.server)
                .map_err(|e| error_chain(&e))?
                .port(self.port.unwrap_or(465)),
            SmtpSecurity::None => {
                lettre::SmtpTransport::builder_dangerous(&self.server).port(self.port.unwrap_or(25))
            }
        };
        let mut builder = builder
            .timeout(Some(timeout))
            .hello_name(ClientId::Domain(local_hostname()));
        if let (Some(user), Some(password)) = (&self.username, password) {
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        Ok(builder.build())
    }

    pub(super) fn send(&self, event: &Event, timeout: Duration) -> Result<(), DeliveryError> {
        use lettre::Transport;
        let password = match &self.password_file {
            Some(path) => Some(read_password(path).map_err(DeliveryError::permanent)?),
            None => None,
        };
        let message = self.message(event)?;
        let transport = self
            .transport(password, timeout)
            .map_err(|e| DeliveryError::permanent(format!("smtp server {}: {e}", self.server)))?;
        transport.send(&message).map(|_| ()).map_err(|e| {
            let reason = format!("smtp server {}: {}", self.server, error_chain(&e));
            if e.is_permanent() || e.is_client() {
                DeliveryError::permanent(reason)
            } else {
                DeliveryError::transient(reason)
            }
        })
    }

    pub(super) fn message(&self, event: &Event) -> Result<lettre::Message, DeliveryError> {
        let subject = format!(
            "[lifeboat] {}: {}",
            event.host,
            one_line(&event.summary, 150)
        );
        // Text for people: control characters escaped, the details' JSON stays JSON.
        let scrub = crate::display::scrub;
        let mut body = format!(
            "{}\n\nEvent: {}\nJob:   {}\nHost:  {}\nTime:  {}\n",
            scrub(&event.summary),
            event.kind,
            scrub(event.job.as_deref().unwrap_or("-")),
            scrub(&event.host),
            event
                .time
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        );
        if !event.details.is_null() {
            let details = serde_json::to_string_pretty(&event.details).unwrap_or_default();
            body.push_str("\nDetails:\n");
            body.push_str(&crate::display::scrub_lines(&details));
            body.push('\n');
        }
        let mut builder = lettre::Message::builder()
            .from(self.from.clone())
            .subject(subject)
            .header(lettre::message::header::ContentType::TEXT_PLAIN);
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        builder
            .body(body)
            .map_err(|e| DeliveryError::permanent(format!("building the mail: {e}")))
    }
}
