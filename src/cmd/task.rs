//! `deployr run TASK`.

use super::Context;
use crate::error::Error;
use crate::inventory::nearest;
use crate::plan;

pub async fn command(context: &Context, name: &str) -> Result<(), Error> {
    let deployfile = &context.deployfile;
    let Some(task) = deployfile.task(name) else {
        let names: Vec<&str> = deployfile
            .tasks
            .iter()
            .map(|t| t.step.name.as_str())
            .collect();
        let hint = match nearest(name, names.iter().copied()) {
            Some(near) => format!("; did you mean `{near}`?"),
            None if names.is_empty() => "; it defines no [tasks.*]".to_string(),
            None => format!("; its tasks are: {}", names.join(", ")),
        };
        return Err(Error::Usage(format!(
            "{} has no task `{name}`{hint}",
            deployfile.path.display()
        )));
    };
    let steps = plan::in_current(
        deployfile,
        &context.hosts,
        std::slice::from_ref(&task.step),
        &context.invocation.timestamp,
    )?;
    context
        .with_session(async |_, session| {
            if task.lock {
                session.lock(&format!("run {name}")).await?;
            }
            for step in &steps {
                session.execute(step).await?;
            }
            Ok(())
        })
        .await
}
