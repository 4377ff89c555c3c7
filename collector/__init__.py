"""The SCADA edge collector: reads the field (Modbus TCP, OPC UA, MQTT) into a durable spool."""
