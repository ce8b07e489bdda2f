export declare const VALUE_BYTES: number;
export declare function record(i: number, partitions: number): { key: Buffer; value: Buffer; partition: number };
export declare function indexOf(value: Buffer): number;
