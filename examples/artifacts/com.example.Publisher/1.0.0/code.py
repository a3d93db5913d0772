"""Example component: publish a counter locally and to IoT Core, the way AWS's SDK samples do it."""

import json
import os
import sys
import time

from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
from awsiot.greengrasscoreipc.model import QOS, JsonMessage, PublishMessage


def main() -> None:
    thing = os.environ["AWS_IOT_THING_NAME"]
    ipc_client = GreengrassCoreIPCClientV2()
    config = ipc_client.get_configuration().value
    updates = []
    ipc_client.subscribe_to_configuration_update(on_stream_event=updates.append)
    ipc_client.update_state(state="RUNNING")
    count = 0
    while True:
        if updates:
            updates.clear()
            config = ipc_client.get_configuration().value
            print(f"configuration updated: intervalSeconds={config['intervalSeconds']}", flush=True)
        count += 1
        message = {"count": count, "thing": thing, "time": time.time()}
        ipc_client.publish_to_topic(
            topic=config["localTopic"],
            publish_message=PublishMessage(json_message=JsonMessage(message=message)),
        )
        ipc_client.publish_to_iot_core(
            topic_name=f"dt/example/{thing}/counter",
            qos=QOS.AT_LEAST_ONCE,
            payload=json.dumps(message).encode(),
        )
        print(f"published count={count}", flush=True)
        time.sleep(float(config["intervalSeconds"]))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
